"""Deployment policy checks over infra-aws/*.yml: what cfn-lint does not check.

Each check takes the templates (a dict: file name -> template as plain dicts and lists, the
short tags already read as their long forms by cfn-lint's own decoder) and answers a list of
findings (strings naming the file, the resource and the rule). No finding means the policy holds.

    python3 infra-aws/tests/policy.py      # prints the findings of the real templates; exit 1 if any

The pytest suite beside this file runs every check on the real templates (expecting nothing)
and on deliberately broken in-memory copies (expecting the finding).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

INFRA = Path(__file__).resolve().parent.parent
ROOT = INFRA.parent
TEMPLATES = ("network.yml", "ecr.yml", "data.yml", "service.yml")

WORLD = {"0.0.0.0/0", "::/0"}
# The only ports the internet may reach, and only on the load balancer.
PUBLIC_PORTS = {80, 443}
# The ALB's ceiling for idle_timeout.timeout_seconds.
MAX_IDLE_TIMEOUT = 4000
# Names of variables and parameters that hold secrets.
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|KEY|CREDENTIAL", re.IGNORECASE)
# A URL carrying a password: scheme://user:password@host
URL_WITH_PASSWORD = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://(?:[^/\s:@{}]|\$\{[^{}]+\})+:[^/\s@]+@")
# The whole value one dynamic reference (an Fn::Sub may name the secret: ${DatabaseSecret}).
DYNAMIC_SECRET = re.compile(r"^\{\{resolve:(secretsmanager|ssm-secure):(?:[^{}]|\$\{[^{}]+\})+\}\}$")


def load(names=TEMPLATES) -> dict:
    """The templates, decoded with cfn-lint's decoder (which knows !Ref, !Sub, !GetAtt...)."""
    from cfnlint.decode import decode

    templates = {}
    for name in names:
        template, errors = decode(str(INFRA / name))
        if errors or template is None:
            raise ValueError(f"{name} does not parse: {[str(e) for e in errors]}")
        # Plain dicts and strings (the decoder's carry line numbers), so copies mutate freely.
        templates[name] = json.loads(json.dumps(template))
    return templates


def resources(templates: dict, *types: str):
    """(file, logical id, properties) of every resource of the given types."""
    for name, template in templates.items():
        for logical_id, resource in (template.get("Resources") or {}).items():
            if resource.get("Type") in types:
                yield name, logical_id, resource.get("Properties") or {}


# -- cross-stack references ---------------------------------------------------------------------


def _export_suffix(name) -> str | None:
    """`X` of an export or import name written `${SomeStack}-X` (the stack names are parameters)."""
    if isinstance(name, dict) and "Fn::Sub" in name:
        name = name["Fn::Sub"]
    if isinstance(name, str):
        match = re.fullmatch(r"\$\{[A-Za-z0-9:]+\}-(\w+)", name)
        if match:
            return match.group(1)
    return None


def exports(templates: dict) -> dict:
    """Export suffix -> (file, expression exported)."""
    found = {}
    for name, template in templates.items():
        for output in (template.get("Outputs") or {}).values():
            suffix = _export_suffix((output.get("Export") or {}).get("Name"))
            if suffix:
                found[suffix] = (name, output.get("Value"))
    return found


def resolve(templates: dict, name: str, expr):
    """(file, logical id) a resource reference points at, following Fn::ImportValue into the
    exporting template; None when it is not a reference to a resource of these templates."""
    if isinstance(expr, dict):
        if "Ref" in expr and isinstance(expr["Ref"], str):
            if expr["Ref"] in (templates[name].get("Resources") or {}):
                return name, expr["Ref"]
            return None
        if "Fn::GetAtt" in expr:
            target = expr["Fn::GetAtt"]
            logical_id = target[0] if isinstance(target, list) else str(target).split(".")[0]
            return name, logical_id
        if "Fn::ImportValue" in expr:
            suffix = _export_suffix(expr["Fn::ImportValue"])
            exported = exports(templates).get(suffix)
            if exported:
                return resolve(templates, exported[0], exported[1])
    return None


def literal(value):
    """The value when it is a literal (not an intrinsic function), else None."""
    return None if isinstance(value, (dict, list)) else value


def as_int(value):
    try:
        return int(str(value))
    except ValueError:
        return None


# -- 1. ingress from the internet ---------------------------------------------------------------


def load_balancer_groups(templates: dict) -> set:
    """The security groups of internet-facing load balancers, as (file, logical id)."""
    groups = set()
    for name, _, props in resources(templates, "AWS::ElasticLoadBalancingV2::LoadBalancer"):
        if props.get("Scheme", "internet-facing") != "internet-facing":
            continue
        for group in props.get("SecurityGroups") or []:
            target = resolve(templates, name, group)
            if target:
                groups.add(target)
    return groups


def _ingress_rules(templates: dict):
    """(file, label, (file, logical id) of the group or None, rule) of every ingress rule."""
    for name, logical_id, props in resources(templates, "AWS::EC2::SecurityGroup"):
        for rule in props.get("SecurityGroupIngress") or []:
            yield name, logical_id, (name, logical_id), rule
    for name, logical_id, props in resources(templates, "AWS::EC2::SecurityGroupIngress"):
        group = props.get("GroupId") or (
            {"Ref": props["GroupName"]} if "GroupName" in props else None
        )
        yield name, logical_id, resolve(templates, name, group), props


def check_ingress(templates: dict) -> list:
    """No ingress from 0.0.0.0/0 or ::/0, except TCP 80 and 443 on the load balancer's group."""
    alb_groups = load_balancer_groups(templates)
    findings = []
    for name, label, group, rule in _ingress_rules(templates):
        sources = [s for s in (rule.get("CidrIp"), rule.get("CidrIpv6")) if s is not None]
        if any(literal(s) is None for s in sources):
            findings.append(f"{name}: {label}: an ingress range that is not a literal (unprovable)")
            continue
        world = sorted(set(sources) & WORLD)
        if not world:
            continue
        protocol = str(literal(rule.get("IpProtocol")) or "").lower()
        ports = (as_int(literal(rule.get("FromPort"))), as_int(literal(rule.get("ToPort"))))
        public_port = protocol in ("tcp", "6") and ports[0] == ports[1] and ports[0] in PUBLIC_PORTS
        if group in alb_groups and public_port:
            continue
        where = "the load balancer's group" if group in alb_groups else "a group no load balancer uses"
        findings.append(
            f"{name}: {label}: ingress from {world} on {protocol or '?'} "
            f"{ports[0]}-{ports[1]} in {where} (only the ALB on 80/443 may face the internet)"
        )
    return findings


# -- 2. the database ----------------------------------------------------------------------------


def check_database(templates: dict) -> list:
    """Every RDS instance and cluster says PubliclyAccessible false and StorageEncrypted true,
    as literals (a parameter could be set otherwise at deploy time)."""
    findings = []
    for name, logical_id, props in resources(templates, "AWS::RDS::DBInstance"):
        public = props.get("PubliclyAccessible")
        if literal(public) is None or str(public).lower() != "false":
            findings.append(f"{name}: {logical_id}: PubliclyAccessible is {json.dumps(public)}, not false")
        # An Aurora instance is encrypted by its cluster (checked below).
        if "DBClusterIdentifier" not in props:
            encrypted = props.get("StorageEncrypted")
            if literal(encrypted) is None or str(encrypted).lower() != "true":
                findings.append(f"{name}: {logical_id}: StorageEncrypted is {json.dumps(encrypted)}, not true")
    for name, logical_id, props in resources(templates, "AWS::RDS::DBCluster"):
        # Multi-AZ DB clusters have the property, Aurora clusters do not (their instances do).
        if "PubliclyAccessible" in props:
            public = props["PubliclyAccessible"]
            if literal(public) is None or str(public).lower() != "false":
                findings.append(f"{name}: {logical_id}: PubliclyAccessible is {json.dumps(public)}, not false")
        encrypted = props.get("StorageEncrypted")
        if literal(encrypted) is None or str(encrypted).lower() != "true":
            findings.append(f"{name}: {logical_id}: StorageEncrypted is {json.dumps(encrypted)}, not true")
    return findings


# -- 3. public IPs on tasks ---------------------------------------------------------------------


def check_public_ip(templates: dict, setup_text: str | None = None) -> list:
    """No ECS service (nor the one-off tasks of SETUP.md) gets a public IP."""
    findings = []
    for name, logical_id, props in resources(templates, "AWS::ECS::Service"):
        config = (props.get("NetworkConfiguration") or {}).get("AwsvpcConfiguration") or {}
        assign = config.get("AssignPublicIp", "DISABLED")
        if literal(assign) is None or str(assign).upper() != "DISABLED":
            findings.append(f"{name}: {logical_id}: AssignPublicIp is {json.dumps(assign)}")
    for name, logical_id, props in resources(templates, "AWS::ECS::TaskSet"):
        config = (props.get("NetworkConfiguration") or {}).get("AwsVpcConfiguration") or {}
        if str(config.get("AssignPublicIp", "DISABLED")).upper() != "DISABLED":
            findings.append(f"{name}: {logical_id}: AssignPublicIp is enabled")
    if setup_text is not None:
        for number, line in enumerate(setup_text.splitlines(), 1):
            if re.search(r"assignPublicIp\W+ENABLED", line, re.IGNORECASE):
                findings.append(f"SETUP.md:{number}: a one-off task with a public IP")
    return findings


# -- 4. secrets in plain text -------------------------------------------------------------------


def _strings(value, path=""):
    """Every string in a template value (the templates of Fn::Sub included), with its path."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{path}[{index}]")


def _dynamic_reference(value) -> bool:
    """A `{{resolve:secretsmanager:...}}` or `{{resolve:ssm-secure:...}}` reference, literal or
    as the template of an Fn::Sub."""
    if isinstance(value, dict) and set(value) == {"Fn::Sub"}:
        value = value["Fn::Sub"]
        value = value[0] if isinstance(value, list) else value
    return isinstance(value, str) and bool(DYNAMIC_SECRET.match(value))


def _password_properties(value, path=""):
    """(path, value) of every property whose name says it holds a password, outside the
    generator of a Secrets Manager secret (whose `GenerateStringKey: password` is a name)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "GenerateSecretString":
                continue
            if re.search(r"passw(or)?d", key, re.IGNORECASE) and key not in (
                "ManageMasterUserPassword",
                "MasterUserSecret",
            ):
                yield f"{path}.{key}", item
            else:
                yield from _password_properties(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _password_properties(item, f"{path}[{index}]")


def check_plaintext_secrets(templates: dict) -> list:
    """Nothing secret written in a template, passed as a parameter or shown as an output."""
    findings = []
    for name, template in templates.items():
        for param, spec in (template.get("Parameters") or {}).items():
            if SECRET_NAME.search(param) and not re.search(r"(Arn|Name|Id)$", param):
                findings.append(
                    f"{name}: parameter {param}: a secret as a parameter (generate it in Secrets "
                    "Manager and reference it)"
                )
        for output, spec in (template.get("Outputs") or {}).items():
            if SECRET_NAME.search(output) and not re.search(r"(Arn|Name|Id)$", output):
                findings.append(f"{name}: output {output}: a secret's value as an output")
            for path, text in _strings(spec.get("Value")):
                if "{{resolve:" in text:
                    findings.append(f"{name}: output {output}: shows a resolved secret ({text})")
        for section in ("Resources", "Outputs", "Parameters"):
            for path, text in _strings(template.get(section) or {}, section):
                if URL_WITH_PASSWORD.search(text):
                    findings.append(f"{name}: {path}: a URL with a password in it")
    for name, logical_id, props in resources(templates, "AWS::ECS::TaskDefinition"):
        for container in props.get("ContainerDefinitions") or []:
            for variable in container.get("Environment") or []:
                if SECRET_NAME.search(str(variable.get("Name"))):
                    findings.append(
                        f"{name}: {logical_id}: environment variable {variable.get('Name')} of "
                        f"{container.get('Name')} looks secret: give it through Secrets"
                    )
    for name, logical_id, props in resources(templates, "AWS::SecretsManager::Secret"):
        if "SecretString" in props:
            findings.append(f"{name}: {logical_id}: SecretString written in the template")
    for name, template in templates.items():
        for logical_id, resource in (template.get("Resources") or {}).items():
            props = resource.get("Properties") or {}
            for path, value in _password_properties(props, "Properties"):
                if not _dynamic_reference(value):
                    findings.append(
                        f"{name}: {logical_id}: {path} is {json.dumps(value)}, not a "
                        "{{resolve:secretsmanager:...}} reference"
                    )
            if resource.get("Type") in ("AWS::RDS::DBInstance", "AWS::RDS::DBCluster"):
                managed = str(props.get("ManageMasterUserPassword", "false")).lower() == "true"
                restored = "DBSnapshotIdentifier" in props or "SnapshotIdentifier" in props
                member = "DBClusterIdentifier" in props or "SourceDBInstanceIdentifier" in props
                if not (managed or restored or member or "MasterUserPassword" in props):
                    findings.append(f"{name}: {logical_id}: no master password source")
    return findings


# -- 5. the load balancer's idle timeout --------------------------------------------------------


def default_heartbeat() -> int:
    """TDC_SSE_HEARTBEAT_SECS's default, read from src/config.rs."""
    source = (ROOT / "src" / "config.rs").read_text()
    match = re.search(
        r'env = "TDC_SSE_HEARTBEAT_SECS",\s*default_value = "(\d+)"', source
    )
    if not match:
        raise ValueError("TDC_SSE_HEARTBEAT_SECS's default not found in src/config.rs")
    return int(match.group(1))


def heartbeats(templates: dict, default: int) -> list:
    """The SSE heartbeat of every serve task definition: its TDC_SSE_HEARTBEAT_SECS, or the
    default; None where it is not a literal."""
    found = []
    for _, _, props in resources(templates, "AWS::ECS::TaskDefinition"):
        for container in props.get("ContainerDefinitions") or []:
            if container.get("Command") and "serve" not in container.get("Command"):
                continue
            env = {v.get("Name"): v.get("Value") for v in container.get("Environment") or []}
            value = env.get("TDC_SSE_HEARTBEAT_SECS", default)
            found.append(as_int(literal(value)) if literal(value) is not None else None)
    return found or [default]


def check_idle_timeout(templates: dict, default_heartbeat_secs: int | None = None) -> list:
    """Every ALB's idle timeout is set, above twice the SSE heartbeat and at most 4000 s: the
    literal, or the parameter's default, bounds and allowed values."""
    default = default_heartbeat() if default_heartbeat_secs is None else default_heartbeat_secs
    beats = heartbeats(templates, default)
    findings = []
    if None in beats:
        return ["TDC_SSE_HEARTBEAT_SECS is not a literal: the idle timeout cannot be checked"]
    floor = 2 * max(beats)

    def out_of_range(value) -> bool:
        return value is None or value <= floor or value > MAX_IDLE_TIMEOUT

    for name, logical_id, props in resources(templates, "AWS::ElasticLoadBalancingV2::LoadBalancer"):
        if props.get("Type", "application") != "application":
            continue
        attributes = {
            a.get("Key"): a.get("Value") for a in props.get("LoadBalancerAttributes") or []
        }
        value = attributes.get("idle_timeout.timeout_seconds")
        where = f"{name}: {logical_id}: idle_timeout.timeout_seconds"
        limits = f"(must be > {floor}, twice the heartbeat, and <= {MAX_IDLE_TIMEOUT})"
        if value is None:
            findings.append(f"{where} is not set (the ALB's 60 s default) {limits}")
        elif isinstance(value, dict) and set(value) == {"Ref"}:
            param = (templates[name].get("Parameters") or {}).get(value["Ref"])
            if param is None:
                findings.append(f"{where} refers to {value['Ref']}, not a parameter")
                continue
            for key in ("Default", "MinValue", "MaxValue"):
                if key not in param and not (key != "Default" and "AllowedValues" in param):
                    findings.append(f"{where}: parameter {value['Ref']} has no {key} {limits}")
                elif key in param and out_of_range(as_int(param[key])):
                    findings.append(
                        f"{where}: parameter {value['Ref']} {key} {param[key]} {limits}"
                    )
            for allowed in param.get("AllowedValues") or []:
                if out_of_range(as_int(allowed)):
                    findings.append(
                        f"{where}: parameter {value['Ref']} allows {allowed} {limits}"
                    )
        elif literal(value) is None:
            findings.append(f"{where} is {json.dumps(value)}: neither a literal nor a parameter")
        elif out_of_range(as_int(value)):
            findings.append(f"{where} is {value} {limits}")
    return findings


def setup_text() -> str:
    return (INFRA / "SETUP.md").read_text()


CHECKS = {
    "ingress": check_ingress,
    "database": check_database,
    "public_ip": lambda t: check_public_ip(t, setup_text()),
    "plaintext_secrets": check_plaintext_secrets,
    "idle_timeout": check_idle_timeout,
}


def main() -> int:
    templates = load()
    findings = [f"{policy}: {f}" for policy, check in CHECKS.items() for f in check(templates)]
    for finding in findings:
        print(finding)
    print(f"{len(CHECKS)} policies over {len(templates)} templates: {len(findings)} findings")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
