"""Checks on the chart's rendered manifests that neither `helm lint` nor the Kubernetes
schemas can make: the pieces must fit together (the router's routing file names the
headless Services that exist, the NetworkPolicy admits only the router to the judges, GPU
pools ask for GPUs, every judge has native gRPC probes ...).

Used by scripts/test-chart.sh:

    chart_checks.py check RENDERED.yaml VALUES.yaml [VALUES.yaml ...]
        structural checks; exits non-zero with a message on the first failure
    chart_checks.py router-toml RENDERED.yaml OUT.toml REPO_ROOT
        writes the router's config with in-image paths mapped to the repository and a
        loopback listen address, so the real `autoj router` can parse and validate it
    chart_checks.py break RENDERED.yaml OUT_DIR
        writes deliberately broken copies of the Deployment (each must be rejected)
    chart_checks.py env-names RENDERED.yaml AUTOJ_BIN
        every AUTOJ_* variable a container sets is one its `autoj <command>` reads (clap
        ignores unknown variables, so a misspelt one would be silently lost)
    chart_checks.py schema-scenarios SCHEMA.json SCENARIOS.toml
        the schema's scenario enum must equal the router's catalog
    chart_checks.py image-matches-ci REPO_ROOT
        docker/Dockerfile.cuda builds on the CUDA version and compute capability CI builds
        with (scripts/cuda-toolchain.sh), and the chart's CUDA image says that capability
"""

import base64
import copy
import json
import sys
import re
import subprocess
import tomllib

import yaml


def load(path):
    """Every non-empty document of a multi-document YAML file."""
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def merged_values(paths):
    """The chart's defaults overlaid with the given values files, as helm merges them."""

    def merge(base, over):
        for key, value in over.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                merge(base[key], value)
            else:
                base[key] = value
        return base

    values = {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            merge(values, yaml.safe_load(f) or {})
    return values


def fail(message):
    print(f"chart check failed: {message}", file=sys.stderr)
    sys.exit(1)


def expect(condition, message):
    if not condition:
        fail(message)


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def named(docs, kind, name):
    found = [d for d in by_kind(docs, kind) if d["metadata"]["name"] == name]
    expect(len(found) == 1, f"expected one {kind} {name}, found {len(found)}")
    return found[0]


def router_config(docs):
    maps = [d for d in by_kind(docs, "ConfigMap") if "router.toml" in d.get("data", {})]
    expect(len(maps) == 1, "expected one ConfigMap with router.toml")
    return tomllib.loads(maps[0]["data"]["router.toml"])


def env_of(container):
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def check_judges(docs, values, config):
    """Each pool: a Deployment and a headless Service named in the router's config, native
    gRPC probes, GPUs and the CUDA image when asked for, and its rules in order."""
    pools = values["pools"]
    services = {s["metadata"]["name"]: s for s in by_kind(docs, "Service")}
    routed = {p["name"]: p["dns"] for p in config["routing"]["pool"]}
    expect(list(routed) == [p["name"] for p in pools], f"router pools {list(routed)}")
    expect(config["routing"]["default_pool"] == values["router"]["defaultPool"], "default pool")
    for pool in pools:
        host, _, port = routed[pool["name"]].partition(":")
        svc_name = host.split(".")[0]
        svc = services.get(svc_name)
        expect(svc is not None, f"pool {pool['name']}: no Service {svc_name} for {host}")
        expect(svc["spec"].get("clusterIP") == "None", f"{svc_name} is not headless")
        expect(str(svc["spec"]["ports"][0]["port"]) == port, f"{svc_name}: port {port}")
        deploy = named(docs, "Deployment", svc_name)
        selector = deploy["spec"]["selector"]["matchLabels"]
        expect(svc["spec"]["selector"] == selector, f"{svc_name}: Service selects other pods")
        pod = deploy["spec"]["template"]
        expect(
            all(pod["metadata"]["labels"].get(k) == v for k, v in selector.items()),
            f"{svc_name}: pod labels miss the selector",
        )
        (judge,) = pod["spec"]["containers"]
        expect(judge["args"][0] == "judge", f"{svc_name}: runs {judge['args']}")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            expect("grpc" in judge.get(probe, {}), f"{svc_name}: {probe} is not a gRPC probe")
        env = env_of(judge)
        gpus = pool.get("gpus", 0)
        limits = judge.get("resources", {}).get("limits", {})
        if gpus:
            expect(limits.get("nvidia.com/gpu") == gpus, f"{svc_name}: nvidia.com/gpu limit")
            expect(env["AUTOJ_DEVICE"] == "cuda:0", f"{svc_name}: device {env['AUTOJ_DEVICE']}")
            image = pool.get("image", values["image"]["cuda"])
            want_image = image["repository"]
            check_compute_capability(svc_name, image, pool, pod["spec"].get("nodeSelector", {}))
        else:
            expect("nvidia.com/gpu" not in limits, f"{svc_name}: GPU limit on a CPU pool")
            expect(env["AUTOJ_DEVICE"] == "cpu", f"{svc_name}: device {env['AUTOJ_DEVICE']}")
            want_image = pool.get("image", values["image"]["cpu"])["repository"]
        expect(judge["image"].startswith(want_image + ":"), f"{svc_name}: image {judge['image']}")
        check_model(svc_name, pool["model"], pod["spec"], judge, env)
    want_rules = [
        (p["name"], {k: v for k, v in r.items()}) for p in pools for r in p.get("routes", [])
    ]
    got_rules = [
        (r["pool"], {k: v for k, v in r.items() if k not in ("pool", "name")})
        for r in config["routing"].get("rule", [])
    ]
    expect(got_rules == want_rules, f"routing rules {got_rules} != {want_rules}")


def check_compute_capability(name, image, pool, selector):
    """A GPU pool runs only where its image's kernels run: nodes whose GPU has the compute
    capability the image was built for (its own nodeSelector kept beside)."""
    cc = str(image.get("computeCapability") or "")
    for key, value in (pool.get("nodeSelector") or {}).items():
        expect(selector.get(key) == value, f"{name}: nodeSelector lost {key}={value}")
    if not cc:
        return
    want = {"nvidia.com/gpu.compute.major": cc[:-1], "nvidia.com/gpu.compute.minor": cc[-1]}
    for key, value in want.items():
        expect(selector.get(key) == value,
               f"{name}: image built for compute capability {cc} but nodeSelector {selector}")


def check_model(name, model, pod, judge, env):
    """The weights reach the judge at the path it is told, from the source asked for."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = {m["name"]: m for m in judge.get("volumeMounts", [])}
    sources = [k for k in ("pvc", "hostPath", "init") if k in model]
    if not sources:
        expect(env["AUTOJ_MODEL"] == model["file"], f"{name}: model {env['AUTOJ_MODEL']}")
        expect("models" not in volumes, f"{name}: a models volume without a source")
        return
    expect(env["AUTOJ_MODEL"] == "/models/" + model["file"].lstrip("/"), f"{name}: model path")
    expect(mounts["models"]["mountPath"] == "/models", f"{name}: models mount")
    volume = volumes["models"]
    if "pvc" in model:
        claim = volume["persistentVolumeClaim"]
        expect(claim["claimName"] == model["pvc"]["claimName"], f"{name}: claim")
        expect(mounts["models"].get("readOnly") is True, f"{name}: weights mounted writable")
    elif "hostPath" in model:
        expect(volume["hostPath"]["path"] == model["hostPath"]["path"], f"{name}: hostPath")
    else:
        expect("emptyDir" in volume, f"{name}: init weights need an emptyDir")
        (init,) = pod["initContainers"]
        expect(init["image"] == model["init"]["image"], f"{name}: init image")
        expect(
            any(m["name"] == "models" and m["mountPath"] == "/models" for m in init["volumeMounts"]),
            f"{name}: the init container cannot write /models",
        )


def check_router(docs, values):
    """Router: the Service's ports, Secrets mounted as files and named by env, probes."""
    routers = [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-router")]
    expect(len(routers) == 1, "expected one router Deployment")
    pod = routers[0]["spec"]["template"]["spec"]
    (router,) = pod["containers"]
    expect(router["args"][:2] == ["router", "--config"], f"router args {router['args']}")
    env = env_of(router)
    mounts = {m["mountPath"]: m["name"] for m in router["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    secrets = {s["metadata"]["name"]: s for s in by_kind(docs, "Secret")}

    def secret_file(var, mount_dir, key):
        path = env.get(var)
        expect(path == f"{mount_dir}/{key}", f"router {var} = {path}")
        secret = volumes[mounts[mount_dir]]["secret"]["secretName"]
        return secret

    auth, tls = values.get("auth", {}), values.get("tls", {})
    if auth.get("enabled"):
        key = auth.get("existingSecretKey", "api-keys") if auth.get("existingSecret") else "api-keys"
        secret = secret_file("AUTOJ_API_KEYS_FILE", "/etc/autoj/auth", key)
        if auth.get("existingSecret"):
            expect(secret == auth["existingSecret"], "auth: existing Secret not mounted")
        else:
            keys = base64.b64decode(secrets[secret]["data"]["api-keys"]).decode().split()
            expect(keys == auth["apiKeys"], "auth: Secret does not hold the keys")
    else:
        expect("AUTOJ_API_KEYS_FILE" not in env, "auth off but a keys file is set")
    if tls.get("enabled"):
        secret = secret_file("AUTOJ_TLS_CERT", "/etc/autoj/tls", "tls.crt")
        expect(env["AUTOJ_TLS_KEY"] == "/etc/autoj/tls/tls.key", "tls key path")
        if not tls.get("existingSecret"):
            expect(secrets[secret]["type"] == "kubernetes.io/tls", "tls Secret type")
        expect("tcpSocket" in router["readinessProbe"], "TLS router needs a TCP probe")
    else:
        expect("AUTOJ_TLS_CERT" not in env, "tls off but a certificate is set")
        expect("grpc" in router["readinessProbe"], "router readiness is not a gRPC probe")
    service = named(docs, "Service", routers[0]["metadata"]["name"])
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    expect(ports.get("grpc") == values["router"]["port"], f"router Service ports {ports}")
    if values["metrics"]["enabled"]:
        expect(ports.get("metrics") == values["metrics"]["port"], "router metrics port")
        expect("AUTOJ_METRICS_LISTEN" in env, "metrics on but no metrics listener")
    http = values["router"]["http"]
    container_ports = {p["name"]: p["containerPort"] for p in router["ports"]}
    listen = router_config(docs).get("http_listen")
    if http["enabled"]:
        expect(ports.get("http") == http["port"], f"router Service has no http port: {ports}")
        expect(container_ports.get("http") == http["port"], "router container's http port")
        expect(listen == f"0.0.0.0:{http['port']}", f"router http_listen = {listen}")
        # The door serves TLS with the router's certificate when tls is on.
        app = {p["name"]: p.get("appProtocol") for p in service["spec"]["ports"]}["http"]
        want = "https" if tls.get("enabled") else "http"
        expect(app == want, f"router http port appProtocol {app}, want {want}")
    else:
        expect("http" not in ports and listen is None, "HTTP door off but still served")


def check_policies(docs, values):
    """Judges admit gRPC from the router's pods only; PDBs and HPAs target real objects."""
    if values["networkPolicy"]["enabled"]:
        policies = {p["metadata"]["name"]: p for p in by_kind(docs, "NetworkPolicy")}
        judge = [p for n, p in policies.items() if n.endswith("-judge")]
        expect(len(judge) == 1, "expected one judge NetworkPolicy")
        spec = judge[0]["spec"]
        expect(spec["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "judge", "judge policy selector")
        grpc_rules = [r for r in spec["ingress"] if any(p["port"] == "grpc" for p in r["ports"])]
        expect(len(grpc_rules) == 1, "one ingress rule for the judges' gRPC port")
        peers = grpc_rules[0].get("from", [])
        expect(
            len(peers) == 1
            and peers[0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "router",
            f"judges' gRPC port open to {peers}",
        )
    deployments = {d["metadata"]["name"]: d for d in by_kind(docs, "Deployment")}
    for hpa in by_kind(docs, "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]["name"]
        expect(target in deployments, f"HPA targets missing {target}")
        expect("replicas" not in deployments[target]["spec"], f"{target}: replicas fight the HPA")
    for pdb in by_kind(docs, "PodDisruptionBudget"):
        labels = pdb["spec"]["selector"]["matchLabels"]
        matches = [
            n for n, d in deployments.items()
            if all(d["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in labels.items())
        ]
        expect(len(matches) == 1, f"PDB {pdb['metadata']['name']} selects {matches}")
    monitors = by_kind(docs, "ServiceMonitor")
    wanted = values["metrics"]["enabled"] and values["metrics"]["serviceMonitor"]["enabled"]
    expect(len(monitors) == (1 if wanted else 0), f"{len(monitors)} ServiceMonitors")
    for monitor in monitors:
        expect(monitor["apiVersion"] == "monitoring.coreos.com/v1", "ServiceMonitor apiVersion")
        selector = monitor["spec"]["selector"]["matchLabels"]
        scraped = [
            s for s in by_kind(docs, "Service")
            if all(s["metadata"]["labels"].get(k) == v for k, v in selector.items())
            and any(p["name"] == "metrics" for p in s["spec"]["ports"])
        ]
        expect(len(scraped) == 1 + len(values["pools"]), "ServiceMonitor misses a Service")


def check(rendered, value_files):
    docs = load(rendered)
    values = merged_values(value_files)
    config = router_config(docs)
    check_judges(docs, values, config)
    check_router(docs, values)
    check_policies(docs, values)
    kinds = sorted({d["kind"] for d in docs})
    print(f"{rendered}: {len(docs)} manifests fit together ({', '.join(kinds)})")


def router_toml(rendered, out, root):
    maps = [d for d in by_kind(load(rendered), "ConfigMap") if "router.toml" in d.get("data", {})]
    text = maps[0]["data"]["router.toml"]
    text = text.replace("/opt/autoj/router/classifier", f"{root}/router/classifier")
    text = text.replace("/opt/autoj/lib/libonnxruntime.so", f"{root}/models/onnxruntime/libonnxruntime.so")
    text = "\n".join(
        'listen = "127.0.0.1:0"' if line.startswith("listen = ")
        else 'http_listen = "127.0.0.1:0"' if line.startswith("http_listen = ")
        else line
        for line in text.splitlines()
    )
    with open(out, "w", encoding="utf-8") as f:
        f.write(text + "\n")


def break_manifests(rendered, out_dir):
    """Two broken copies of the first judge Deployment: an unknown field (only --strict
    catches it) and a wrong type (any schema catches it)."""
    deploy = next(d for d in by_kind(load(rendered), "Deployment") if "-judge-" in d["metadata"]["name"])
    unknown = copy.deepcopy(deploy)
    unknown["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["grpcPort"] = 50051
    wrong_type = copy.deepcopy(deploy)
    wrong_type["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "grpc"
    for name, doc in (("unknown-field", unknown), ("wrong-type", wrong_type)):
        with open(f"{out_dir}/{name}.yaml", "w", encoding="utf-8") as f:
            yaml.safe_dump(doc, f)


def env_names(rendered, autoj):
    known = {}
    checked = 0
    for deploy in by_kind(load(rendered), "Deployment"):
        for container in deploy["spec"]["template"]["spec"]["containers"]:
            command = container["args"][0]
            if command not in known:
                help_text = subprocess.run(
                    [autoj, command, "--help"], check=True, capture_output=True, text=True
                ).stdout
                known[command] = set(re.findall(r"\[env: (AUTOJ_[A-Z0-9_]+)", help_text))
            for name in env_of(container):
                if name.startswith("AUTOJ_"):
                    expect(name in known[command], f"`autoj {command}` reads no {name}")
                    checked += 1
    print(f"{checked} AUTOJ_* variables are read by the commands their containers run")


def schema_scenarios(schema_path, scenarios_path):
    with open(schema_path, encoding="utf-8") as f:
        schema = json.load(f)
    with open(scenarios_path, "rb") as f:
        catalog = [s["name"] for s in tomllib.load(f)["scenario"]]
    route = schema["properties"]["pools"]["items"]["properties"]["routes"]["items"]
    enum = route["properties"]["scenarios"]["items"]["enum"]
    expect(enum == catalog, "values.schema.json's scenario enum differs from router/data/scenarios.toml")
    print(f"schema names the catalog's {len(catalog)} scenarios")


def image_matches_ci(root):
    """The CUDA image is CI's build: the same CUDA major.minor as the pinned nvcc, the same
    default compute capability as the toolchain's env.sh, and the chart's default CUDA image
    declares that capability."""
    def read(path):
        with open(f"{root}/{path}", encoding="utf-8") as f:
            return f.read()

    def one(pattern, text, what):
        found = re.findall(pattern, text, re.M)
        expect(len(found) == 1, f"{what}: expected one match of {pattern!r}, found {found}")
        return found[0]

    toolchain = read("scripts/cuda-toolchain.sh")
    dockerfile = read("docker/Dockerfile.cuda")
    ci_cuda = one(r"^nvidia-cuda-nvcc==(\d+\.\d+)\.", toolchain, "cuda-toolchain.sh's nvcc pin")
    ci_cap = one(r'CUDA_COMPUTE_CAP="\\\$\{CUDA_COMPUTE_CAP:-(\d+)\}"', toolchain, "env.sh's capability")
    image_cuda = one(r"^ARG CUDA_VERSION=(\d+\.\d+)\.\d+$", dockerfile, "Dockerfile.cuda's CUDA_VERSION")
    image_cap = one(r"^ARG CUDA_COMPUTE_CAP=(\d+)$", dockerfile, "Dockerfile.cuda's CUDA_COMPUTE_CAP")
    expect(image_cuda == ci_cuda, f"Dockerfile.cuda builds on CUDA {image_cuda}, CI on {ci_cuda}")
    expect(image_cap == ci_cap, f"Dockerfile.cuda builds for compute capability {image_cap}, CI for {ci_cap}")
    chart_cap = str(yaml.safe_load(read("helm/autoj/values.yaml"))["image"]["cuda"].get("computeCapability"))
    expect(chart_cap == ci_cap, f"values.yaml's CUDA image says compute capability {chart_cap}, CI builds {ci_cap}")
    print(f"Dockerfile.cuda and the chart match CI: CUDA {ci_cuda}, compute capability {ci_cap}")


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command == "check":
        check(args[0], args[1:])
    elif command == "router-toml":
        router_toml(*args)
    elif command == "break":
        break_manifests(*args)
    elif command == "env-names":
        env_names(*args)
    elif command == "schema-scenarios":
        schema_scenarios(*args)
    elif command == "image-matches-ci":
        image_matches_ci(*args)
    else:
        fail(f"unknown command {command}")
