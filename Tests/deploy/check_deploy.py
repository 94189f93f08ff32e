#!/usr/bin/env python3
"""Checks deploy/ against the code: every YAML file parses; each service in compose,
Kubernetes and systemd runs an executable the package builds, sets only variables the
services read, sets the ones it needs, and probes the port and paths it really serves.

Run by `make test` (scripts/check-deploy.sh). Prints one line per check group and exits 1
with the list of problems when any is found.
"""
import configparser
import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
problems = []
checked = []


def problem(where, text):
    problems.append(f"{where}: {text}")


# --- What the code provides -------------------------------------------------------------

package = (ROOT / "Package.swift").read_text()
EXECUTABLES = set(re.findall(r'\.executable\(name: "([^"]+)"', package))
SERVICES = {"chat-gateway", "chat-messages", "chat-presence", "chat-retention"}
assert SERVICES <= EXECUTABLES, f"Package.swift lost a service executable: {SERVICES - EXECUTABLES}"

configuration = (ROOT / "Shared/ChatCore/ChatConfiguration.swift").read_text()
VARIABLES = set(re.findall(r'env\["((?:CHAT_[A-Z_]+)|LOG_LEVEL)"\]', configuration))
VARIABLES |= set(re.findall(r'"(CHAT_[A-Z_]+)", env', configuration))
assert {"CHAT_REDIS_URL", "CHAT_HTTP_PORT", "CHAT_ADMIN_PORT", "CHAT_JWT_SECRET"} <= VARIABLES, VARIABLES

# The admin port each service listens on by default, from its main.swift.
ADMIN_DEFAULT = {}
for service in SERVICES:
    folder = service.removeprefix("chat-")
    main = (ROOT / f"Services/{folder}/{service}/main.swift").read_text()
    match = re.search(r"adminPort: (nil|\d+)", main)
    assert match, f"{service}: main.swift passes no adminPort"
    ADMIN_DEFAULT[service] = None if match.group(1) == "nil" else int(match.group(1))

# `chat-messages migrate`: the schema migrations as a one-shot job before the store starts.
MIGRATE = ["chat-messages", "migrate"]
messages_main = (ROOT / "Services/messages/chat-messages/main.swift").read_text()
assert 'first == "migrate"' in messages_main, "chat-messages no longer takes `migrate`"

NEEDS = {
    "chat-gateway": {"CHAT_REDIS_URL", "CHAT_JWT_SECRET"},
    "chat-messages": {"CHAT_REDIS_URL", "CHAT_DB_PATH"},
    "chat-presence": {"CHAT_REDIS_URL"},
    "chat-retention": {"CHAT_REDIS_URL"},
}


def served_port(service, env):
    """The port /healthz and /readyz answer on, given the container's environment."""
    if service == "chat-gateway" and "CHAT_ADMIN_PORT" not in env:
        return int(env.get("CHAT_HTTP_PORT", 8080))
    value = env.get("CHAT_ADMIN_PORT", ADMIN_DEFAULT[service])
    return None if value in (None, "off") else int(value)


def check_environment(where, service, env):
    for name in env:
        if name not in VARIABLES:
            problem(where, f"sets {name}, which no service reads")
    for name in NEEDS[service] - set(env):
        problem(where, f"{service} needs {name}")
    if service == "chat-gateway":
        host = env.get("CHAT_HTTP_HOST", "127.0.0.1")
        loopback = host.startswith("127.") or host in ("localhost", "::1")
        if not loopback and "CHAT_TLS_CERT" not in env and env.get("CHAT_ALLOW_PLAINTEXT") != "1":
            problem(where, "the gateway listens beyond loopback without TLS or CHAT_ALLOW_PLAINTEXT=1: it would refuse to start")
    elif env.get("CHAT_ADMIN_HOST", "127.0.0.1").startswith("127.") and where.startswith(("k8s", "compose")):
        problem(where, f"{service}: admin endpoints on loopback cannot be probed from outside the container (set CHAT_ADMIN_HOST=0.0.0.0)")


# --- Every YAML file parses ------------------------------------------------------------

documents = {}
for path in sorted(DEPLOY.rglob("*.y*ml")):
    try:
        documents[path] = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except yaml.YAMLError as error:
        problem(path.relative_to(ROOT), f"does not parse: {error}")
checked.append(f"{len(documents)} YAML files parse")

# --- Dockerfile -------------------------------------------------------------------------

dockerfile = (DEPLOY / "compose/Dockerfile").read_text()
built = set(re.findall(r"--product (\S+)", dockerfile))
for service in SERVICES:
    if service not in built:
        problem("compose/Dockerfile", f"does not build {service}")
for name in built - EXECUTABLES:
    problem("compose/Dockerfile", f"builds {name}, which Package.swift does not define")
if not re.search(r"^FROM .* AS build$", dockerfile, re.M) or "COPY --from=build" not in dockerfile:
    problem("compose/Dockerfile", "is not a multi-stage build")
image_name = "clinic-chat:latest"
checked.append("Dockerfile builds every service in a multi-stage build")

# --- Compose ----------------------------------------------------------------------------

compose = documents[DEPLOY / "compose/compose.yaml"][0]
seen = set()
gateways = []
migrations = {}
for name, spec in compose["services"].items():
    command = spec.get("command") or []
    if spec.get("image") != image_name:
        continue
    where = f"compose/{name}"
    if command == MIGRATE:
        migrations[name] = spec
        continue
    if not command or command[0] not in EXECUTABLES:
        problem(where, f"runs {command}, not one of {sorted(EXECUTABLES)}")
        continue
    service = command[0]
    seen.add(service)
    env = {k: str(v) for k, v in (spec.get("environment") or {}).items()}
    check_environment(where, service, env)
    port = served_port(service, env)
    test = " ".join(spec.get("healthcheck", {}).get("test", []))
    if f"127.0.0.1:{port}/readyz" not in test:
        problem(where, f"healthcheck {test!r} does not ask /readyz on port {port}")
    if service == "chat-gateway":
        gateways.append((name, port))
for service in SERVICES - seen:
    problem("compose", f"does not run {service}")
store = next(((n, s) for n, s in compose["services"].items() if (s.get("command") or [None])[0] == "chat-messages" and n not in migrations), None)
if len(migrations) != 1 or store is None:
    problem("compose", f"needs one `chat-messages migrate` job beside the store, has {sorted(migrations)}")
else:
    (job, spec), (store_name, store_spec) = next(iter(migrations.items())), store
    if (spec.get("environment") or {}).get("CHAT_DB_PATH") != (store_spec.get("environment") or {}).get("CHAT_DB_PATH"):
        problem(f"compose/{job}", "migrates another CHAT_DB_PATH than the store opens")
    if not set(spec.get("volumes", [])) & set(store_spec.get("volumes", [])):
        problem(f"compose/{job}", "does not mount the store's volume")
    if (store_spec.get("depends_on") or {}).get(job, {}).get("condition") != "service_completed_successfully":
        problem(f"compose/{store_name}", f"does not wait for {job} to complete")
if len(gateways) < 2:
    problem("compose", "needs two gateways behind the load balancer")
nginx = (DEPLOY / "compose/nginx.conf").read_text()
if "ip_hash" not in nginx:
    problem("compose/nginx.conf", "has no sticky sessions (ip_hash)")
for name, port in gateways:
    if f"server {name}:{port}" not in nginx:
        problem("compose/nginx.conf", f"does not send traffic to {name}:{port}")
checked.append(f"compose runs {len(seen)} services and {len(gateways)} gateways behind a sticky load balancer, the store after its migrations")

# --- Kubernetes -------------------------------------------------------------------------

k8s = [doc for path, docs in documents.items() if path.parent.name == "k8s" for doc in docs]
by_kind = {}
for doc in k8s:
    by_kind.setdefault(doc["kind"], []).append(doc)
kustomization = (by_kind.get("Kustomization") or [{}])[0]
listed = set(kustomization.get("resources", []))
for path in documents:
    if path.parent.name == "k8s" and path.name != "kustomization.yaml" and path.name not in listed:
        problem(f"k8s/{path.name}", "is not listed in kustomization.yaml")

config_maps = {d["metadata"]["name"]: d.get("data", {}) for d in by_kind.get("ConfigMap", [])}
secrets = {d["metadata"]["name"]: {**d.get("stringData", {}), **d.get("data", {})} for d in by_kind.get("Secret", [])}
workloads = {}
for doc in by_kind.get("Deployment", []) + by_kind.get("StatefulSet", []):
    for container in doc["spec"]["template"]["spec"]["containers"]:
        command = container.get("command") or []
        if container.get("image") != image_name:
            continue
        where = f"k8s/{doc['kind']}/{doc['metadata']['name']}"
        if not command or command[0] not in EXECUTABLES:
            problem(where, f"runs {command}, not one of {sorted(EXECUTABLES)}")
            continue
        service = command[0]
        workloads[service] = doc
        env = {}
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                env.update(config_maps.get(source["configMapRef"]["name"], {}))
            if "secretRef" in source:
                env.update(secrets.get(source["secretRef"]["name"], {}))
        for item in container.get("env", []):
            env[item["name"]] = str(item.get("value", "<from field>"))
        check_environment(where, service, env)
        port = served_port(service, env)
        declared = {p["containerPort"] for p in container.get("ports", [])}
        if port not in declared:
            problem(where, f"serves health on {port} but declares ports {sorted(declared)}")
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            get = container.get(probe, {}).get("httpGet")
            if not get or get.get("path") != path or get.get("port") != port:
                problem(where, f"{probe} should GET {path} on port {port}, has {get}")
for service in SERVICES - set(workloads):
    problem("k8s", f"does not run {service}")
store = workloads.get("chat-messages", {}).get("spec", {}).get("template", {}).get("spec", {})
init = [c for c in store.get("initContainers", []) if c.get("command") == MIGRATE]
if len(init) != 1:
    problem("k8s", "the store's pod needs one init container running `chat-messages migrate`")
else:
    def db_and_mounts(container):
        path = next((e.get("value") for e in container.get("env", []) if e["name"] == "CHAT_DB_PATH"), None)
        return path, {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    main = next(c for c in store["containers"] if (c.get("command") or [None])[0] == "chat-messages")
    (path, mounts), (main_path, main_mounts) = db_and_mounts(init[0]), db_and_mounts(main)
    folder = str(pathlib.PurePosixPath(main_path or "/")).rsplit("/", 1)[0] or "/"
    if path != main_path:
        problem("k8s/StatefulSet/chat-messages", f"the init container migrates {path}, the store opens {main_path}")
    elif mounts.get(folder) is None or mounts.get(folder) != main_mounts.get(folder):
        problem("k8s/StatefulSet/chat-messages", f"the init container does not mount the store's volume at {folder}")
if workloads.get("chat-messages", {}).get("kind") != "StatefulSet" or not workloads["chat-messages"]["spec"].get("volumeClaimTemplates"):
    problem("k8s", "the store must be a StatefulSet with a volume")
if workloads.get("chat-messages", {}).get("spec", {}).get("replicas") != 1:
    problem("k8s", "the store is the single SQLite writer: one replica")
hpa_targets = {d["spec"]["scaleTargetRef"]["name"] for d in by_kind.get("HorizontalPodAutoscaler", [])}
if workloads.get("chat-gateway", {}).get("metadata", {}).get("name") not in hpa_targets:
    problem("k8s", "no HorizontalPodAutoscaler scales the gateways")
redis = [d for d in by_kind.get("StatefulSet", []) if d["metadata"]["name"] == "redis"]
if not redis or "--appendonly" not in redis[0]["spec"]["template"]["spec"]["containers"][0].get("args", []):
    problem("k8s", "Redis must run with append-only persistence on a volume")
ingresses = by_kind.get("Ingress", [])
if not ingresses or not ingresses[0]["spec"].get("tls"):
    problem("k8s", "the Ingress must terminate TLS")
elif "nginx.ingress.kubernetes.io/affinity" not in ingresses[0]["metadata"].get("annotations", {}):
    problem("k8s", "the Ingress needs session affinity for long-polling")
if "CHAT_JWT_SECRET" not in secrets.get("chat-secrets", {}):
    problem("k8s", "the chat-secrets Secret must hold CHAT_JWT_SECRET")
checked.append(f"k8s runs {len(workloads)} services with probes on their real ports, the store after its migrations, an HPA, TLS Ingress with affinity")

# --- systemd ----------------------------------------------------------------------------

env_file = {}
for line in (DEPLOY / "systemd/chat.env").read_text().splitlines():
    if line.strip() and not line.startswith("#"):
        key, _, value = line.partition("=")
        env_file[key] = value
units = 0
seen = set()
for path in sorted((DEPLOY / "systemd").glob("*.service")):
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    # Repeated keys (Environment=) are joined by configparser's multi-line handling; read them by hand.
    text = path.read_text()
    parser.read_string(re.sub(r"^Environment=.*$", "", text, flags=re.M))
    where = f"systemd/{path.name}"
    exec_start = parser.get("Service", "ExecStart", fallback="").split()
    service = pathlib.Path(exec_start[0]).name if exec_start else ""
    if service not in EXECUTABLES:
        problem(where, f"ExecStart runs {service!r}, not one of {sorted(EXECUTABLES)}")
        continue
    seen.add(service)
    units += 1
    env = dict(env_file)
    for match in re.finditer(r"^Environment=(\w+)=(.*)$", text, re.M):
        env[match.group(1)] = match.group(2)
    env = {k: v for k, v in env.items() if v != "" or k == "CHAT_JWT_SECRET"}
    check_environment(where, service, env)
    if parser.get("Service", "EnvironmentFile", fallback="") != "/etc/clinic-chat/chat.env":
        problem(where, "does not read /etc/clinic-chat/chat.env")
for service in SERVICES - seen:
    problem("systemd", f"has no unit for {service}")
checked.append(f"systemd has {units} units running real executables with known variables")

# --- The operator's documentation lists every variable --------------------------------

operations = (ROOT / "docs/operations.md").read_text()
for name in sorted(VARIABLES):
    if f"`{name}`" not in operations:
        problem("docs/operations.md", f"does not document {name}")
checked.append(f"docs/operations.md documents all {len(VARIABLES)} variables")

for line in checked:
    print("check-deploy:", line)
if problems:
    print("check-deploy: FAIL")
    for line in problems:
        print("  -", line)
    print(f"0 passed, 1 failed")
    sys.exit(1)
print("1 passed, 0 failed")
