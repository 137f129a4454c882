"""Checks of infra-prod that need no Docker engine (run by infra-prod/check-compose.sh).

  check      docker-compose.yml against the Compose Specification's JSON schema (the copy that
             check-jsonschema ships: --builtin-schema vendor.compose-spec), every ${VAR} it uses
             listed in .env.example and nothing else listed there, nginx's envsubst names equal
             to the ${TDC_*} names of nginx.conf, every bind-mount and build path present, and
             the Dockerfile: hadolint, the toolchain tag equal to rust-toolchain.toml's, every
             COPY source present and not excluded by .dockerignore, the binary it builds a
             [[bin]] of Cargo.toml and the one its ENTRYPOINT and HEALTHCHECK run, a non-root
             USER, no secret in ENV or ARG.
  self-test  each check above fails on a broken copy of the files (and passes on an intact one).
  config     validates, then prints the variables as .env (or .env.example) resolves them.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from ruamel.yaml import YAML

# $$ (a literal $), ${NAME...} or $NAME, as Compose reads them.
REFERENCE = re.compile(r"\$(?:(\$)|\{([^}]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
BRACED = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])(.*))?$", re.S)
SECRET_NAME = re.compile(r"SECRET|PASSWORD|TOKEN|PRIVATE|(^|_)KEY$|^DATABASE_URL$", re.I)


class Problems(list):
    def add(self, where, what):
        self.append(f"{where}: {what}")


def load_yaml(path):
    return YAML(typ="safe").load(path.read_text())


def strings(node):
    """Every string value (not the keys) of a parsed YAML document."""
    if isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)
    elif isinstance(node, str):
        yield node


def references(text):
    """The variable names a Compose string interpolates (not those escaped as $$)."""
    names = []
    for match in REFERENCE.finditer(text):
        escaped, braced, bare = match.groups()
        if escaped:
            continue
        if bare:
            names.append(bare)
            continue
        parsed = BRACED.match(braced)
        if not parsed:
            raise ValueError(f"not a variable reference: ${{{braced}}}")
        names.append(parsed.group(1))
    return names


def interpolate(text, env, missing):
    """Compose's interpolation of one string; a required variable without a value becomes a
    placeholder and is added to `missing`."""

    def replace(match):
        escaped, braced, bare = match.groups()
        if escaped:
            return "$"
        if bare:
            return env.get(bare, "")
        name, operator, argument = BRACED.match(braced).groups()
        value = env.get(name)
        if operator in (":-", "-"):
            unset = value is None or (operator == ":-" and value == "")
            return argument if unset else value
        if operator in (":?", "?"):
            if value is None or (operator == ":?" and value == ""):
                missing.append(name)
                return f"<{name}: {argument or 'required'}>"
            return value
        if operator in (":+", "+"):
            set_ = value is not None and (operator == "+" or value != "")
            return argument if set_ else ""
        return value or ""

    return REFERENCE.sub(replace, text)


def interpolated(node, env, missing):
    if isinstance(node, dict):
        return {key: interpolated(value, env, missing) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolated(value, env, missing) for value in node]
    if isinstance(node, str):
        return interpolate(node, env, missing)
    return node


def read_env(path, problems):
    """NAME=value lines of a .env file (comments and blank lines skipped), in order."""
    env = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, equals, value = line.partition("=")
        name = name.strip()
        if not equals or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            problems.add(f"{path.name}:{number}", f"not a NAME=value line: {line!r}")
            continue
        if name in env:
            problems.add(f"{path.name}:{number}", f"{name} is listed twice")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[name] = value
    return env


def schema_problems(document, tools, problems):
    with tempfile.TemporaryDirectory() as scratch:
        rendered = Path(scratch) / "docker-compose.json"
        rendered.write_text(json.dumps(document))
        result = subprocess.run(
            [tools / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", rendered],
            capture_output=True,
            text=True,
        )
    if result.returncode != 0:
        problems.add(
            "docker-compose.yml",
            "not valid against the Compose Specification schema:\n"
            + (result.stdout + result.stderr).strip(),
        )


def check_compose(root, tools, env, problems):
    """Checks of docker-compose.yml with `env` (.env.example's values); the interpolated file."""
    infra = root / "infra-prod"
    compose = load_yaml(infra / "docker-compose.yml")
    used = {name for text in strings(compose) for name in references(text)}
    listed = set(env)
    for name in sorted(used - listed):
        problems.add("docker-compose.yml", f"${{{name}}} is not listed in .env.example")
    for name in sorted(listed - used):
        problems.add(".env.example", f"{name} is not used by docker-compose.yml")

    missing = []
    document = interpolated(compose, env, missing)
    schema_problems(document, tools, problems)

    services = document.get("services") or {}
    for service_name, service in services.items():
        volumes = service.get("volumes") or []
        for volume in volumes:
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith((".", "/")) and not (infra / source).exists():
                problems.add(f"services.{service_name}", f"mounts {source}, which does not exist")
        build = service.get("build")
        if isinstance(build, dict):
            context = infra / build.get("context", ".")
            dockerfile = context / build.get("dockerfile", "Dockerfile")
            if not dockerfile.is_file():
                problems.add(f"services.{service_name}", f"builds {dockerfile}, which does not exist")

    nginx_conf = (infra / "nginx.conf").read_text()
    wanted = set(re.findall(r"\$\{(TDC_[A-Z0-9_]+)\}", nginx_conf))
    nginx = services.get("nginx") or {}
    command = nginx.get("command") or []
    command = " ".join(command) if isinstance(command, list) else command
    envsubst = re.search(r"envsubst\s+'([^']*)'", command)
    given = set(re.findall(r"\$\{([A-Za-z0-9_]+)\}", envsubst.group(1))) if envsubst else set()
    if given != wanted:
        problems.add(
            "services.nginx",
            f"envsubst fills in {sorted(given)}, nginx.conf uses {sorted(wanted)}",
        )
    for name in sorted(wanted - set(nginx.get("environment") or {})):
        problems.add("services.nginx", f"{name} (used by nginx.conf) is not in its environment")
    return missing


def dockerfile_instructions(text):
    """(instruction, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    lines, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    out = []
    for line in lines:
        instruction, _, arguments = line.partition(" ")
        out.append((instruction.upper(), arguments.strip()))
    return out


def dockerignored(root):
    patterns = []
    path = root / ".dockerignore"
    if path.is_file():
        for line in path.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                patterns.append(line.strip("/").removeprefix("**/"))
    return patterns


def check_dockerfile(root, tools, problems):
    where = "infra-prod/Dockerfile"
    path = root / where
    instructions = dockerfile_instructions(path.read_text())

    hadolint = tools / "hadolint"
    result = subprocess.run([hadolint, "--no-color", path], capture_output=True, text=True)
    if result.returncode != 0:
        problems.add(where, "hadolint:\n" + (result.stdout + result.stderr).strip())

    toolchain = tomllib.loads((root / "rust-toolchain.toml").read_text())["toolchain"]["channel"]
    froms = [arguments.split()[0] for instruction, arguments in instructions if instruction == "FROM"]
    rust = [image for image in froms if image.startswith("rust:")]
    if not rust or not rust[0].startswith(f"rust:{toolchain}-"):
        problems.add(where, f"builds with {rust or 'no rust image'}, rust-toolchain.toml says {toolchain}")
    for image in froms:
        if ":" not in image or image.endswith(":latest"):
            problems.add(where, f"FROM {image} is not pinned to a version")

    ignored = dockerignored(root)
    for instruction, arguments in instructions:
        if instruction not in ("COPY", "ADD"):
            continue
        words = arguments.split()
        if any(word.startswith("--from") for word in words):
            continue
        sources = [word for word in words if not word.startswith("--")][:-1]
        for source in sources:
            if not (root / source).exists():
                problems.add(where, f"{instruction} {source}: no such path in the repository")
            top = source.strip("./").split("/")[0]
            if any(top == pattern or source.strip("./") == pattern for pattern in ignored):
                problems.add(where, f"{instruction} {source}: excluded by .dockerignore")
    for needed in ("target", ".git"):
        if needed not in ignored:
            problems.add(".dockerignore", f"does not exclude {needed}/")

    cargo = tomllib.loads((root / "Cargo.toml").read_text())
    bins = {entry["name"] for entry in cargo.get("bin", [])} or {cargo["package"]["name"]}
    runs = [arguments for instruction, arguments in instructions if instruction == "RUN"]
    built = [m for run in runs for m in re.findall(r"cargo build\b.*?--bin[ =](\S+)", run)]
    if not built or built[0] not in bins:
        problems.add(where, f"builds --bin {built or 'nothing'}, Cargo.toml's binaries are {sorted(bins)}")
    for run in runs:
        if "cargo build" in run and not ("--release" in run and "--locked" in run):
            problems.add(where, "cargo build without --release --locked")

    def exec_form(name):
        found = [arguments for instruction, arguments in instructions if instruction == name]
        if not found:
            return None
        text = found[-1]
        if name == "HEALTHCHECK":
            text = text[text.find("CMD") + 3:].strip() if "CMD" in text else ""
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            problems.add(where, f"{name} is not in exec form: {text}")
            return None

    entrypoint = exec_form("ENTRYPOINT")
    copied = [
        arguments.split()[-1]
        for instruction, arguments in instructions
        if instruction == "COPY" and "--from" in arguments
    ]
    if not entrypoint or not built or Path(entrypoint[0]).name != built[0]:
        problems.add(where, f"ENTRYPOINT {entrypoint} does not run the binary built ({built})")
    elif entrypoint[0] not in copied:
        problems.add(where, f"ENTRYPOINT runs {entrypoint[0]}, which no COPY --from puts there")
    healthcheck = exec_form("HEALTHCHECK")
    if not healthcheck or not entrypoint or healthcheck[:2] != [entrypoint[0], "health"]:
        problems.add(where, f"HEALTHCHECK {healthcheck} does not run `{entrypoint and entrypoint[0]} health`")
    if exec_form("CMD") != ["serve"]:
        problems.add(where, "CMD is not [\"serve\"]")

    users = [arguments for instruction, arguments in instructions if instruction == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.add(where, f"the image runs as root (USER {users[-1] if users else 'unset'})")
    for instruction, arguments in instructions:
        if instruction in ("ENV", "ARG"):
            for name in re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)(?==|\s|$)", arguments):
                if SECRET_NAME.search(name):
                    problems.add(where, f"{instruction} {name}: no secret is baked into the image")
    if not any(instruction == "STOPSIGNAL" and arguments == "SIGTERM" for instruction, arguments in instructions):
        problems.add(where, "no STOPSIGNAL SIGTERM")


def check(root, tools):
    problems = Problems()
    env = read_env(root / "infra-prod" / ".env.example", problems)
    check_compose(root, tools, env, problems)
    check_dockerfile(root, tools, problems)
    return problems


# Each breakage: what it breaks, the file, the text replaced and its replacement, and a piece of
# the problem the checks must then report.
BREAKAGES = [
    ("a typo'd key", "infra-prod/docker-compose.yml", "    healthcheck:\n      test:", "    healtcheck:\n      test:", "healtcheck"),
    ("a wrong type", "infra-prod/docker-compose.yml", "      retries: 12", "      retries: [12]", "retries"),
    ("a variable missing from .env.example", "infra-prod/.env.example", "TDC_UPLOAD_LIMIT_BYTES=1073741824\n", "", "${TDC_UPLOAD_LIMIT_BYTES} is not listed"),
    ("an unused variable in .env.example", "infra-prod/.env.example", "TDC_IMAGE=", "TDC_UNUSED=1\nTDC_IMAGE=", "TDC_UNUSED is not used"),
    ("a name envsubst does not fill in", "infra-prod/docker-compose.yml", " $${TDC_UPSTREAM_2}", "", "envsubst fills in"),
    ("a missing bind-mount source", "infra-prod/docker-compose.yml", "./db-setup.sh:", "./db-setup.bash:", "mounts ./db-setup.bash"),
    ("a COPY of a missing path", "infra-prod/Dockerfile", "COPY migrations ./migrations", "COPY migration ./migrations", "COPY migration: no such path"),
    ("a COPY of an ignored path", ".dockerignore", "target/\n", "target/\nbenches/\n", "COPY benches: excluded"),
    ("another toolchain", "rust-toolchain.toml", 'channel = "', 'channel = "9', "rust-toolchain.toml says 9"),
    ("a binary Cargo.toml does not build", "infra-prod/Dockerfile", "--bin tinydevcrm", "--bin tinydevcrn", "builds --bin ['tinydevcrn']"),
    ("a health check of another command", "infra-prod/Dockerfile", 'tinydevcrm", "health"]', 'tinydevcrm", "healthz"]', "HEALTHCHECK"),
    ("a root user", "infra-prod/Dockerfile", "USER 10001:10001", "USER root", "runs as root"),
    ("a baked-in secret", "infra-prod/Dockerfile", "LOG_FORMAT=json", "LOG_FORMAT=json JWT_SECRET=x", "ENV JWT_SECRET"),
    ("a hadolint finding", "infra-prod/Dockerfile", "install -y --no-install-recommends", "install -y", "DL3015"),
]

COPIED = ["infra-prod", "src", "migrations", "benches", "tests", ".sqlx", "Cargo.toml", "Cargo.lock",
          "rust-toolchain.toml", ".dockerignore"]


def self_test(root, tools):
    failures = []
    with tempfile.TemporaryDirectory() as scratch:
        pristine = Path(scratch) / "pristine"
        pristine.mkdir()
        for name in COPIED:
            source = root / name
            if source.is_dir():
                shutil.copytree(source, pristine / name, ignore=shutil.ignore_patterns(".env"))
            else:
                shutil.copy2(source, pristine / name)
        found = check(pristine, tools)
        if found:
            failures.append("the intact copy fails: " + "; ".join(found))
        for description, file, old, new, expected in BREAKAGES:
            copy = Path(scratch) / "broken"
            if copy.exists():
                shutil.rmtree(copy)
            shutil.copytree(pristine, copy)
            path = copy / file
            text = path.read_text()
            if old not in text:
                failures.append(f"{description}: {old!r} is not in {file} any more; update the breakage")
                continue
            path.write_text(text.replace(old, new, 1))
            found = check(copy, tools)
            if not any(expected in problem for problem in found):
                failures.append(f"{description}: not caught (expected {expected!r}; found {found})")
            else:
                first = next(problem for problem in found if expected in problem)
                lines = first.splitlines()
                detail = next((line.strip() for line in lines[1:] if expected in line), "")
                detail = detail or next((line.strip() for line in lines[1:] if line.strip()), "")
                print(f"check-compose self-test: {description}: caught: {lines[0]} {detail}"[:300])
    return failures


def config(root, tools, env_file):
    problems = Problems()
    example = root / "infra-prod" / ".env.example"
    check_compose(root, tools, read_env(example, problems), problems)
    if problems:
        return problems
    source = env_file if env_file.is_file() else example
    if source == example:
        print(f"prod-config: no {env_file}: showing .env.example's values (copy it to .env and fill it in)")
    env = read_env(source, problems)
    # As in Compose, the shell's environment wins over the file.
    env.update({name: os.environ[name] for name in env if name in os.environ})
    compose = load_yaml(root / "infra-prod" / "docker-compose.yml")
    missing = []
    document = interpolated(compose, env, missing)
    if source != example:
        schema_problems(document, tools, problems)
    if problems:
        return problems
    used = sorted({name for text in strings(compose) for name in references(text)})
    print("prod-config: docker-compose.yml is valid against the Compose Specification schema")
    print(f"prod-config: the variables, from {source}:")
    for name in used:
        value = env.get(name)
        if name in missing:
            shown = "<required: set it in .env>"
        elif value is None:
            shown = "<unset>"
        elif SECRET_NAME.search(name):
            shown = f"<set, {len(value)} characters>"
        else:
            shown = value
        print(f"  {name}={shown}")
    jwt_secret = env.get("TDC_JWT_SECRET") or ""
    if jwt_secret and len(jwt_secret.encode()) < 32:
        problems.add(str(source), "TDC_JWT_SECRET must be at least 32 bytes (the service refuses less)")
    if missing and source != example:
        problems.add(str(env_file), "required variables without a value: " + ", ".join(sorted(set(missing))))
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["check", "self-test", "config"])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--tools", type=Path, default=Path(sys.executable).parent,
                        help="the directory of check-jsonschema and hadolint (the venv's bin/)")
    parser.add_argument("--env-file", type=Path, default=None)
    args = parser.parse_args()
    if args.mode == "check":
        problems = check(args.root, args.tools)
        for problem in problems:
            print(f"check-compose: {problem}", file=sys.stderr)
        if problems:
            return 1
        print("check-compose: docker-compose.yml, .env.example and the Dockerfile pass every check")
        return 0
    if args.mode == "self-test":
        failures = self_test(args.root, args.tools)
        for failure in failures:
            print(f"check-compose self-test: {failure}", file=sys.stderr)
        if failures:
            return 1
        print(f"check-compose self-test: {len(BREAKAGES)} breakages, each caught")
        return 0
    env_file = args.env_file or args.root / "infra-prod" / ".env"
    problems = config(args.root, args.tools, env_file)
    for problem in problems:
        print(f"prod-config: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
