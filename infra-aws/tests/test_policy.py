"""The deployment policies hold on the real templates, and each check is seen failing on
deliberately broken in-memory copies of them, in every run (so a check that stopped looking
would fail here, not pass silently)."""

from __future__ import annotations

import copy

import pytest

import policy

TEMPLATES = policy.load()
SETUP = policy.setup_text()


def broken(change):
    """A deep copy of the templates with `change(templates)` applied."""
    templates = copy.deepcopy(TEMPLATES)
    change(templates)
    return templates


def props(templates, file, logical_id):
    return templates[file]["Resources"][logical_id]["Properties"]


def serve_container(templates):
    return props(templates, "service.yml", "TaskDefinition")["ContainerDefinitions"][0]


def add_resource(templates, file, logical_id, type_, properties):
    templates[file]["Resources"][logical_id] = {"Type": type_, "Properties": properties}


def assert_finding(findings, *words):
    assert any(all(w in f for w in words) for f in findings), (
        f"expected a finding with {words}, got {findings}"
    )


# -- the templates hold what the policies look at --------------------------------------------


def test_the_templates_have_what_the_policies_check():
    counts = {
        kind: len(list(policy.resources(TEMPLATES, kind)))
        for kind in (
            "AWS::EC2::SecurityGroup",
            "AWS::ElasticLoadBalancingV2::LoadBalancer",
            "AWS::RDS::DBInstance",
            "AWS::ECS::Service",
            "AWS::ECS::TaskDefinition",
            "AWS::SecretsManager::Secret",
        )
    }
    assert counts == {
        "AWS::EC2::SecurityGroup": 3,
        "AWS::ElasticLoadBalancingV2::LoadBalancer": 1,
        "AWS::RDS::DBInstance": 1,
        "AWS::ECS::Service": 1,
        "AWS::ECS::TaskDefinition": 2,
        "AWS::SecretsManager::Secret": 2,
    }
    # The ALB's group is found through the service stack's Fn::ImportValue.
    assert policy.load_balancer_groups(TEMPLATES) == {("network.yml", "LoadBalancerSecurityGroup")}
    assert policy.default_heartbeat() == 15


# -- 1. ingress ----------------------------------------------------------------------------------


def _alb_ssh(t):
    props(t, "network.yml", "LoadBalancerSecurityGroup")["SecurityGroupIngress"].append(
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "CidrIp": "0.0.0.0/0"}
    )


def _alb_all_ports(t):
    rule = props(t, "network.yml", "LoadBalancerSecurityGroup")["SecurityGroupIngress"][0]
    rule.update({"IpProtocol": "-1", "FromPort": -1, "ToPort": -1})


def _alb_port_range(t):
    rule = props(t, "network.yml", "LoadBalancerSecurityGroup")["SecurityGroupIngress"][0]
    rule.update({"FromPort": 80, "ToPort": 443})


def _tasks_from_world(t):
    rule = props(t, "network.yml", "ServiceSecurityGroup")["SecurityGroupIngress"][0]
    del rule["SourceSecurityGroupId"]
    rule["CidrIp"] = "0.0.0.0/0"


def _database_from_world_v6(t):
    add_resource(
        t,
        "data.yml",
        "OpenDatabase",
        "AWS::EC2::SecurityGroupIngress",
        {
            "GroupId": {"Fn::ImportValue": {"Fn::Sub": "${NetworkStack}-DatabaseSecurityGroup"}},
            "IpProtocol": "tcp",
            "FromPort": 5432,
            "ToPort": 5432,
            "CidrIpv6": "::/0",
        },
    )


def _https_on_tasks_group(t):
    # The load balancer moved to the tasks' group: the old ALB group's 80/443 from the world
    # no longer belongs to a load balancer.
    props(t, "service.yml", "LoadBalancer")["SecurityGroups"] = [
        {"Fn::ImportValue": {"Fn::Sub": "${NetworkStack}-ServiceSecurityGroup"}}
    ]


def _ssh_from_parameter(t):
    props(t, "network.yml", "ServiceSecurityGroup")["SecurityGroupIngress"].append(
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "CidrIp": {"Ref": "VpcCidr"}}
    )


@pytest.mark.parametrize(
    "change, words",
    [
        (_alb_ssh, ("LoadBalancerSecurityGroup", "tcp 22-22")),
        (_alb_all_ports, ("LoadBalancerSecurityGroup", "-1")),
        (_alb_port_range, ("LoadBalancerSecurityGroup", "80-443")),
        (_tasks_from_world, ("ServiceSecurityGroup", "0.0.0.0/0", "no load balancer")),
        (_database_from_world_v6, ("OpenDatabase", "::/0")),
        (_https_on_tasks_group, ("LoadBalancerSecurityGroup", "no load balancer")),
        (_ssh_from_parameter, ("ServiceSecurityGroup", "not a literal")),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else None,
)
def test_ingress_from_the_internet_only_reaches_the_load_balancer_on_80_and_443(change, words):
    assert policy.check_ingress(TEMPLATES) == []
    assert_finding(policy.check_ingress(broken(change)), *words)


# -- 2. the database -----------------------------------------------------------------------------


def _db(t):
    return props(t, "data.yml", "Database")


def _cluster(t):
    add_resource(
        t,
        "data.yml",
        "Cluster",
        "AWS::RDS::DBCluster",
        {"Engine": "aurora-postgresql", "StorageEncrypted": False},
    )


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda t: _db(t).update(PubliclyAccessible=True), ("PubliclyAccessible is true",)),
        (lambda t: _db(t).pop("PubliclyAccessible"), ("PubliclyAccessible is null",)),
        (
            lambda t: _db(t).update(PubliclyAccessible={"Ref": "MultiAZ"}),
            ("PubliclyAccessible", "Ref"),
        ),
        (lambda t: _db(t).update(StorageEncrypted=False), ("StorageEncrypted is false",)),
        (lambda t: _db(t).pop("StorageEncrypted"), ("StorageEncrypted is null",)),
        (
            lambda t: _db(t).update(StorageEncrypted={"Ref": "MultiAZ"}),
            ("StorageEncrypted", "Ref"),
        ),
        (_cluster, ("Cluster", "StorageEncrypted is false")),
    ],
    ids=[
        "public",
        "public-unsaid",
        "public-parameter",
        "unencrypted",
        "encryption-unsaid",
        "encryption-parameter",
        "unencrypted-cluster",
    ],
)
def test_the_database_is_private_and_encrypted(change, words):
    assert policy.check_database(TEMPLATES) == []
    assert_finding(policy.check_database(broken(change)), *words)


# -- 3. public IPs -------------------------------------------------------------------------------


def _service_network(t):
    return props(t, "service.yml", "Service")["NetworkConfiguration"]["AwsvpcConfiguration"]


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda t: _service_network(t).update(AssignPublicIp="ENABLED"), ("ENABLED",)),
        (
            lambda t: _service_network(t).update(AssignPublicIp={"Ref": "LogRetentionDays"}),
            ("AssignPublicIp", "Ref"),
        ),
    ],
    ids=["enabled", "parameter"],
)
def test_no_task_gets_a_public_ip(change, words):
    assert policy.check_public_ip(TEMPLATES, SETUP) == []
    assert_finding(policy.check_public_ip(broken(change), SETUP), "Service", *words)


def test_no_one_off_task_in_setup_gets_a_public_ip():
    assert "assignPublicIp=DISABLED" in SETUP, "SETUP.md runs its one-off tasks privately"
    assert policy.check_public_ip(TEMPLATES, SETUP) == []
    opened = SETUP.replace("assignPublicIp=DISABLED", "assignPublicIp=ENABLED", 1)
    assert_finding(policy.check_public_ip(TEMPLATES, opened), "SETUP.md", "public IP")


# -- 4. secrets in plain text --------------------------------------------------------------------


def _env(t, name, value):
    serve_container(t)["Environment"].append({"Name": name, "Value": value})


def _url_with_password(t):
    for variable in serve_container(t)["Environment"]:
        if variable["Name"] == "DATABASE_URL":
            template, values = variable["Value"]["Fn::Sub"]
            variable["Value"]["Fn::Sub"] = [
                template.replace("${User}@", "${User}:Winter2026pass@"),
                values,
            ]


def _literal_master_password(t):
    _db(t)["MasterUserPassword"] = "Winter2026pass"


def _master_password_parameter(t):
    t["data.yml"]["Parameters"]["DatabasePassword"] = {"Type": "String", "NoEcho": True}
    _db(t)["MasterUserPassword"] = {"Ref": "DatabasePassword"}


def _no_master_password(t):
    del _db(t)["MasterUserPassword"]


def _secret_output(t):
    t["data.yml"]["Outputs"]["Connection"] = {
        "Value": {"Fn::Sub": "{{resolve:secretsmanager:${DatabaseSecret}:SecretString:password}}"}
    }


def _literal_secret_string(t):
    secret = props(t, "data.yml", "JwtSecret")
    del secret["GenerateSecretString"]
    secret["SecretString"] = "0123456789abcdef0123456789abcdef"


def _secret_moved_to_environment(t):
    container = serve_container(t)
    jwt = next(s for s in container["Secrets"] if s["Name"] == "JWT_SECRET")
    container["Secrets"].remove(jwt)
    container["Environment"].append({"Name": "JWT_SECRET", "Value": jwt["ValueFrom"]})


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda t: _env(t, "DB_PASSWORD", "Winter2026pass"), ("DB_PASSWORD",)),
        (lambda t: _env(t, "GITHUB_TOKEN", {"Ref": "ImageTag"}), ("GITHUB_TOKEN",)),
        (lambda t: _env(t, "AWS_SECRET_ACCESS_KEY", "x"), ("AWS_SECRET_ACCESS_KEY",)),
        (_secret_moved_to_environment, ("JWT_SECRET",)),
        (_url_with_password, ("URL with a password",)),
        (_literal_master_password, ("MasterUserPassword", "Winter2026pass")),
        (_master_password_parameter, ("parameter DatabasePassword",)),
        (_master_password_parameter, ("MasterUserPassword", "Ref")),
        (_no_master_password, ("no master password source",)),
        (_secret_output, ("output Connection", "resolved secret")),
        (_literal_secret_string, ("JwtSecret", "SecretString")),
    ],
    ids=[
        "env-password",
        "env-token",
        "env-key",
        "jwt-in-env",
        "url-password",
        "literal-master-password",
        "password-parameter",
        "password-from-parameter",
        "no-password-source",
        "output-resolves-secret",
        "literal-secret-string",
    ],
)
def test_no_secret_in_plain_text(change, words):
    assert policy.check_plaintext_secrets(TEMPLATES) == []
    assert_finding(policy.check_plaintext_secrets(broken(change)), *words)


# -- 5. the load balancer's idle timeout ---------------------------------------------------------


def _idle_parameter(t):
    return t["service.yml"]["Parameters"]["IdleTimeoutSeconds"]


def _idle_attribute(t):
    attributes = props(t, "service.yml", "LoadBalancer")["LoadBalancerAttributes"]
    return next(a for a in attributes if a["Key"] == "idle_timeout.timeout_seconds")


def _no_idle_attribute(t):
    attributes = props(t, "service.yml", "LoadBalancer")["LoadBalancerAttributes"]
    attributes.remove(_idle_attribute(t))


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda t: _idle_parameter(t).update(Default=30), ("Default 30",)),
        (lambda t: _idle_parameter(t).update(MinValue=10), ("MinValue 10",)),
        (lambda t: _idle_parameter(t).update(MaxValue=4001), ("MaxValue 4001",)),
        (lambda t: _idle_parameter(t).pop("MinValue"), ("no MinValue",)),
        (lambda t: _idle_parameter(t).pop("MaxValue"), ("no MaxValue",)),
        (
            lambda t: _idle_parameter(t).update(AllowedValues=[20, 120]),
            ("allows 20",),
        ),
        (lambda t: _idle_attribute(t).update(Value="25"), ("is 25",)),
        (lambda t: _idle_attribute(t).update(Value="4500"), ("is 4500",)),
        (_no_idle_attribute, ("not set",)),
        (lambda t: _env(t, "TDC_SSE_HEARTBEAT_SECS", "60"), ("must be > 120",)),
    ],
    ids=[
        "default-too-low",
        "min-too-low",
        "max-too-high",
        "no-min",
        "no-max",
        "allowed-too-low",
        "literal-too-low",
        "literal-too-high",
        "unset",
        "heartbeat-raised",
    ],
)
def test_the_idle_timeout_stays_above_two_heartbeats_and_within_the_alb_limit(change, words):
    assert policy.check_idle_timeout(TEMPLATES) == []
    assert_finding(policy.check_idle_timeout(broken(change)), *words)
