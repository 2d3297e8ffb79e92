# runfleet: every operation is a recipe. `just --list` explains each.
# On a fresh machine, run recipes through scripts/dev.sh, which installs
# what they need first (e.g. `scripts/dev.sh test`).

set shell := ["bash", "-euo", "pipefail", "-c"]

build_dir := "build"
asan_dir := "build/asan"

# List the recipes.
default:
    @{{just_executable()}} --list

# Build runfleetd, runfleet and runfleet-hook (release) into build/bin/.
build:
    cmake -S . -B {{build_dir}} -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build {{build_dir}}

# Build the test configuration: ASan+UBSan binaries and cmocka tests in build/asan/.
build-asan:
    cmake -S . -B {{asan_dir}} -G Ninja -DCMAKE_BUILD_TYPE=Debug -DRUNFLEET_SANITIZE=ON -DRUNFLEET_TESTS=ON >/dev/null
    cmake --build {{asan_dir}}

# Run every test: lint, cmocka unit tests (ctest) and pytest system tests under ASan+UBSan, each fuzz target for FUZZ_SECONDS (default 12), then system tests under valgrind.
test: lint build-asan
    scripts/run-tests.sh

# Run only the cmocka unit tests (ctest); ARGS go to ctest, e.g. `-R webhook`.
test-unit *ARGS: build-asan
    ctest --test-dir {{asan_dir}} --output-on-failure {{ARGS}}

# Run only the pytest system tests; ARGS go to pytest, e.g. `-k signature`.
test-system *ARGS: build-asan
    RUNFLEET_BIN_DIR={{justfile_directory()}}/{{asan_dir}}/bin python -m pytest tests {{ARGS}}

# Build the libFuzzer targets (clang, ASan+UBSan) and run each for FUZZ_SECONDS (default 300); TARGETS: e.g. fuzz_config.
fuzz *TARGETS:
    FUZZ_SECONDS=${FUZZ_SECONDS:-300} scripts/fuzz.sh {{TARGETS}}

# Run a representative set of system tests with runfleetd under valgrind memcheck (release build with symbols in build/valgrind); any error or definite leak fails. ARGS go to pytest.
test-valgrind *ARGS:
    scripts/test-valgrind.sh {{ARGS}}

# Check formatting (clang-format) and shell scripts (shellcheck).
lint:
    scripts/lint.sh

# Rewrite C sources in place with clang-format.
fmt:
    git ls-files '*.c' '*.h' | xargs clang-format -i

# Run the demo: GitHub simulator, runfleetd on the local backend, a burst of jobs.
demo *ARGS: build
    python scripts/demo.py {{ARGS}}

# Apply hand-picked mutations to a copy of the tree; each must fail its tests (ARGS: -k ID, --list).
mutate *ARGS:
    python scripts/mutate.py {{ARGS}}

# Run the benchmarks on the release build; each prints a table with ratios against a reference measured in the same run (the ingest one drives runfleetd with wrk; the Kubernetes one starts the test cluster of tests/kube, BENCH_JOBS runner pods).
bench: build
    build/bin/bench_scheduler
    RUNFLEET_BIN_DIR={{justfile_directory()}}/{{build_dir}}/bin python bench/bench_webhook.py
    RUNFLEET_BIN_DIR={{justfile_directory()}}/{{build_dir}}/bin python bench/bench_journal.py
    RUNFLEET_BIN_DIR={{justfile_directory()}}/{{build_dir}}/bin python bench/bench_kube.py

# ---------------------------------------------------------------- deployment
# Recipes that stand a fleet up on AWS (docs/QUICKSTART.md). Tool versions
# are pinned in mise.toml (`mise install`); `deploy-tools` builds the same
# versions from source into the tool cache for the tests.

tofu := env_var_or_default("TOFU", "tofu")
image_tag := env_var_or_default("IMAGE_TAG", "0.1.0")

# Build the pinned deployment tools (kube-apiserver, kube-scheduler, etcd, kubectl, kwok, kustomize, helm, tofu, packer, ...) into the tool cache.
deploy-tools *TOOLS:
    tests/kube/build-tools.sh {{TOOLS}}

# Run the deployment and Kubernetes validation tests (pytest tests/deploy tests/kube).
test-deploy *ARGS:
    python -m pytest tests/deploy tests/kube {{ARGS}}

# Stage the sources an image or AMI build needs (CMakeLists.txt and every directory it adds) into build/image-src.
stage-src:
    rm -rf build/image-src && mkdir -p build/image-src build/ami
    dirs=$(sed -n 's/^add_subdirectory(\([^) ]*\).*/\1/p' CMakeLists.txt); \
      git ls-files -co --exclude-standard -- CMakeLists.txt cmake $dirs | tar -cf - -T - | tar -xf - -C build/image-src
    tar -czf build/ami/runfleet-src.tar.gz -C build/image-src .

# Build a container image: runner-base, runner-gpu or runfleetd (tag: IMAGE_TAG, default 0.1.0).
docker-build IMAGE: stage-src
    test -f images/{{IMAGE}}/Dockerfile || { echo "no image images/{{IMAGE}}" >&2; exit 2; }
    docker buildx build images/{{IMAGE}} --build-context runfleet-src=build/image-src \
      --load -t runfleet/{{IMAGE}}:{{image_tag}}

# Tag and push an image built by docker-build to REGISTRY (e.g. the ECR registry from `just tf-output ENV`).
docker-push IMAGE REGISTRY:
    if [[ "{{REGISTRY}}" == *.dkr.ecr.*.amazonaws.com ]]; then \
      aws ecr get-login-password --region "$(cut -d. -f4 <<<"{{REGISTRY}}")" | \
        docker login --username AWS --password-stdin "{{REGISTRY}}"; fi
    docker tag runfleet/{{IMAGE}}:{{image_tag}} {{REGISTRY}}/runfleet/{{IMAGE}}:{{image_tag}}
    docker push {{REGISTRY}}/runfleet/{{IMAGE}}:{{image_tag}}

# Render the Kustomize overlays and the Helm chart and check them against a real kube-apiserver (the tests).
k8s-validate:
    for env in staging production; do kustomize build kubernetes/overlays/$env >/dev/null && echo "kustomize $env: ok"; done
    python -m pytest tests/deploy/test_deploy_manifests.py tests/deploy/test_deploy_consistency.py -q

# Apply an overlay (staging|production) to the cluster of $KUBECONFIG (else kubectl's current context), with images from REGISTRY.
k8s-apply ENV REGISTRY:
    test -d kubernetes/overlays/{{ENV}} || { echo "no overlay kubernetes/overlays/{{ENV}}" >&2; exit 2; }
    kustomize build kubernetes/overlays/{{ENV}} | sed 's#registry\.invalid#{{REGISTRY}}#g' | kubectl apply --server-side -f -

# Lint the Helm chart with each values file.
helm-lint:
    helm lint --strict helm/runfleet --set registry=registry.invalid
    for env in staging production; do helm lint --strict helm/runfleet -f helm/runfleet/values-$env.yaml --set registry=registry.invalid; done

# Install or upgrade the chart for ENV (staging|production) into runfleet-system of the cluster of $KUBECONFIG (else the current context), with images from REGISTRY; ARGS go to helm (e.g. --set serviceMonitor.enabled=false).
helm-install ENV REGISTRY *ARGS:
    helm upgrade --install runfleet helm/runfleet --namespace runfleet-system --create-namespace \
      -f helm/runfleet/values-{{ENV}}.yaml --set registry={{REGISTRY}} {{ARGS}}

# Initialise Terraform/OpenTofu for ENV (staging|production) with its S3 backend.hcl.
tf-init ENV:
    cd terraform/environments/{{ENV}} && {{tofu}} init -backend-config=backend.hcl

# Plan ENV into terraform/environments/ENV/tfplan.
tf-plan ENV:
    cd terraform/environments/{{ENV}} && {{tofu}} plan -out=tfplan

# Apply the saved plan of ENV.
tf-apply ENV:
    cd terraform/environments/{{ENV}} && {{tofu}} apply tfplan

# Print ENV's outputs (cluster name, kubeconfig command, ECR registry, node groups).
tf-output ENV:
    cd terraform/environments/{{ENV}} && {{tofu}} output

# Check the Packer templates offline: packer fmt -check and packer validate.
ami-validate: stage-src
    for t in ami/*/packer.pkr.hcl; do packer fmt -check -diff "$t"; packer init "$t" >/dev/null && packer validate "$t"; done

# Build an AMI: eks-base or eks-gpu (AWS credentials; runner images to pre-pull in RUNNER_IMAGES, comma-separated).
ami-build NAME: stage-src
    packer init ami/{{NAME}}/packer.pkr.hcl
    images=$(python3 -c 'import json, os; print(json.dumps([i for i in os.environ.get("RUNNER_IMAGES", "").split(",") if i]))'); \
      packer build -var "runner_images=$images" ami/{{NAME}}/packer.pkr.hcl
