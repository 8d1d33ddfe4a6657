#!/usr/bin/env bash
# Install the tools that tests/deploy needs, only where missing or at another version:
#
#   .tools/bin/helm, .tools/bin/kubeconform   go install through the Go module proxy
#   .tools/bin/deploycheck                    go build of tests/deploy/deploycheck (Dockerfile, compose)
#   promtool, prometheus                      Debian's `prometheus` package (apt-get, sudo when not root)
#   .tools/schemas/                           JSON schemas for offline validation:
#     kubernetes/vX.Y.Z-standalone-strict/    Kubernetes API schemas from PyPI's kubernetes-validate
#     crds/<group>/<kind>_<version>.json      prometheus-operator and KEDA CRDs, from their Go modules
#     keda/kafka-scaler.json                  the KEDA Kafka trigger's parameter names, from KEDA's source
#
# Idempotent: a second run checks version stamps and returns in well under a second.
# Needs: Go >= 1.26 (BuildKit, in deploycheck, needs it; /usr/local/go/bin is searched too),
# the project's venv (.venv, for PyYAML and pip) or a python3 with both, apt-get for prometheus.
# Versions are pinned below; change one and the next run reinstalls that tool only.
set -euo pipefail

HELM_VERSION=v3.22.0
KUBECONFORM_VERSION=v0.8.0
KUBERNETES_VALIDATE_VERSION=1.37.0
# Kubernetes versions the chart is validated against: the oldest supported (Chart.yaml's
# kubeVersion) and the newest that kubernetes-validate ships.
KUBERNETES_VERSIONS="1.27.0 1.37.0"
PROMETHEUS_OPERATOR_VERSION=v0.85.0
KEDA_VERSION=v2.21.0

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$repo/.tools"
bin="$tools/bin"
schemas="$tools/schemas"
mkdir -p "$bin"

say() { echo "install-deploy-tools: $*" >&2; }

find_go() {
    if command -v go >/dev/null 2>&1; then
        command -v go
    elif [[ -x /usr/local/go/bin/go ]]; then
        echo /usr/local/go/bin/go
    else
        say "Go is needed to build helm and kubeconform (go install); install Go >= 1.26 and re-run"
        exit 1
    fi
}

# go_tool NAME PACKAGE VERSION: go install PACKAGE@VERSION into .tools/bin unless the stamp says so.
go_tool() {
    local name="$1" package="$2" version="$3"
    local stamp="$bin/.$name.version"
    if [[ -x "$bin/$name" && -f "$stamp" && "$(cat "$stamp")" == "$package@$version" ]]; then
        return 0
    fi
    local go
    go="$(find_go)"
    # A binary built earlier without a stamp: its embedded build info names its version.
    if [[ -x "$bin/$name" ]] && "$go" version -m "$bin/$name" 2>/dev/null \
        | grep -Eq "^[[:space:]]+mod[[:space:]]+${package%%/cmd/*}[[:space:]]+$version[[:space:]]"; then
        echo "$package@$version" >"$stamp"
        return 0
    fi
    say "building $name $version with go install (helm takes minutes on a cold Go cache)"
    GOBIN="$bin" GOFLAGS="${GOFLAGS:--buildvcs=false}" "$go" install "$package@$version"
    echo "$package@$version" >"$stamp"
}

go_tool helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION"
go_tool kubeconform github.com/yannh/kubeconform/cmd/kubeconform "$KUBECONFORM_VERSION"

# deploycheck: BuildKit's Dockerfile parser and compose-go, for the Dockerfile and the compose
# file (no Docker engine needed). Rebuilt when its sources change; versions pinned in its go.mod/go.sum.
checker_src="$repo/tests/deploy/deploycheck"
checker_stamp="$(cat "$checker_src/main.go" "$checker_src/go.mod" "$checker_src/go.sum" | sha256sum | cut -c1-16)"
if [[ ! -x "$bin/deploycheck" || ! -f "$bin/.deploycheck.version" \
    || "$(cat "$bin/.deploycheck.version")" != "$checker_stamp" ]]; then
    say "building deploycheck (BuildKit Dockerfile parser + compose-go)"
    (cd "$checker_src" && GOFLAGS="${GOFLAGS:--buildvcs=false}" "$(find_go)" build -o "$bin/deploycheck" .)
    echo "$checker_stamp" >"$bin/.deploycheck.version"
fi

# --- promtool and prometheus ------------------------------------------------------------
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
    # Debian's prometheus package, for promtool and prometheus (>= 2.42).
    bash "$repo/scripts/apt-install.sh" install-deploy-tools prometheus
    sudo=""
    [[ "$(id -u)" == "0" ]] || sudo="sudo"
    # Only the binaries are wanted: do not leave a system Prometheus running on :9090.
    if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
        $sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
    fi
fi

# --- schemas ------------------------------------------------------------------------------
schema_stamp="kubernetes-validate==$KUBERNETES_VALIDATE_VERSION k8s=$KUBERNETES_VERSIONS"
schema_stamp+=" prometheus-operator@$PROMETHEUS_OPERATOR_VERSION keda@$KEDA_VERSION format=2"
if [[ -f "$schemas/.stamp" && "$(cat "$schemas/.stamp")" == "$schema_stamp" ]]; then
    exit 0
fi

python=""
for candidate in "$repo/.venv/bin/python" python3; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import yaml, pip' >/dev/null 2>&1; then
        python="$candidate"
        break
    fi
done
if [[ -z "$python" ]]; then
    say "need a Python with PyYAML and pip to prepare the schemas: run 'make setup' (creates .venv) first"
    exit 1
fi

go="$(find_go)"
module_dir() {
    # The module's files, from the Go module proxy into the module cache (GOMODCACHE).
    "$go" mod download -json "$1@$2" | "$python" -c 'import json, sys; print(json.load(sys.stdin)["Dir"])'
}
say "fetching CRDs: prometheus-operator $PROMETHEUS_OPERATOR_VERSION, KEDA $KEDA_VERSION (Go modules)"
operator_dir="$(module_dir github.com/prometheus-operator/prometheus-operator "$PROMETHEUS_OPERATOR_VERSION")"
keda_dir="$(module_dir github.com/kedacore/keda/v2 "$KEDA_VERSION")"

say "fetching Kubernetes schemas: kubernetes-validate $KUBERNETES_VALIDATE_VERSION (PyPI)"
cache="$tools/cache"
mkdir -p "$cache"
"$python" -m pip download --quiet --no-deps --disable-pip-version-check \
    --dest "$cache" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
wheel="$(ls "$cache"/kubernetes_validate-"$KUBERNETES_VALIDATE_VERSION"-*.whl | head -n 1)"

rm -rf "$schemas.new"
mkdir -p "$schemas.new"
"$python" - "$schemas.new" "$wheel" "$KUBERNETES_VERSIONS" \
    "$operator_dir/example/prometheus-operator-crd" "$keda_dir/config/crd/bases" \
    "$keda_dir/pkg/scalers/kafka_scaler.go" <<'PY'
"""Lay out schemas the way kubeconform's -schema-location templates expect."""
import json
import re
import sys
import zipfile
from pathlib import Path

import yaml

out, wheel, versions, operator_crds, keda_crds, kafka_scaler = sys.argv[1:]
out = Path(out)


class CrdLoader(yaml.SafeLoader):
    """YAML 1.1 reads a bare '=' (an enum value in one CRD) as the 'value' type: keep it a string."""


CrdLoader.add_constructor("tag:yaml.org,2002:value", lambda loader, node: loader.construct_scalar(node))

# Kubernetes: kubernetes-validate's "-local-strict" schemas carry an https "$id" and refer to
# "/api/_definitions.json"; drop the "$id" and make the references relative so kubeconform
# resolves them to the _definitions.json next to the schema file.
with zipfile.ZipFile(wheel) as archive:
    for version in versions.split():
        source = f"kubernetes_validate/kubernetes-json-schema/v{version}-local-strict/"
        target = out / "kubernetes" / f"v{version}-standalone-strict"
        target.mkdir(parents=True)
        names = [n for n in archive.namelist() if n.startswith(source) and n.endswith(".json")]
        if not names:
            sys.exit(f"kubernetes-validate has no schemas for Kubernetes {version}")
        for name in names:
            schema = json.loads(archive.read(name))
            schema.pop("$id", None)
            text = json.dumps(schema).replace('"/api/_definitions.json#', '"_definitions.json#')
            (target / name[len(source):]).write_text(text)


def strict(node):
    """openapi2jsonschema's strict mode: no unknown fields where the CRD lists them."""
    if isinstance(node, list):
        return [strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: strict(value) for key, value in node.items()}
    if node.pop("x-kubernetes-int-or-string", False):
        node.pop("type", None)
        node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if "properties" in node and "additionalProperties" not in node \
            and not node.get("x-kubernetes-preserve-unknown-fields"):
        node["additionalProperties"] = False
    return node


count = 0
for folder in (operator_crds, keda_crds):
    for path in sorted(Path(folder).glob("*.yaml")):
        for crd in yaml.load_all(path.read_text(), Loader=CrdLoader):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group = crd["spec"]["group"]
            kind = crd["spec"]["names"]["kind"].lower()
            for version in crd["spec"]["versions"]:
                schema = strict(version["schema"]["openAPIV3Schema"])
                schema["$schema"] = "http://json-schema.org/draft-07/schema#"
                target = out / "crds" / group / f"{kind}_{version['name']}.json"
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(json.dumps(schema, indent=1))
                count += 1
if count < 10:
    sys.exit(f"only {count} CRD schemas found; the module layout changed")

# KEDA's Kafka trigger takes string metadata the CRD cannot check; take the parameter
# names (and enums) from the scaler's struct tags.
tags = re.findall(r'keda:"name=([A-Za-z]+),order=([A-Za-z;]+)([^"]*)"', Path(kafka_scaler).read_text())
parameters = {}
for name, order, rest in tags:
    enum = re.search(r"enum=([A-Za-z0-9_;]+)", rest)
    parameters[name] = {"from": order.split(";"), "enum": enum.group(1).split(";") if enum else None}
if not {"bootstrapServers", "consumerGroup", "topic", "lagThreshold", "sasl", "tls"} <= set(parameters):
    sys.exit("KEDA's kafka scaler parameters could not be read")
(out / "keda").mkdir()
(out / "keda" / "kafka-scaler.json").write_text(json.dumps(parameters, indent=1, sort_keys=True))
PY
echo "$schema_stamp" >"$schemas.new/.stamp"
rm -rf "$schemas" "$cache"
mv "$schemas.new" "$schemas"
say "schemas ready in $schemas"
