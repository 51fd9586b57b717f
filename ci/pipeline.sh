#!/usr/bin/env bash
# The image pipeline, the same steps as .github/workflows/image.yml, against any registry:
#   build -> verify (static) -> push by digest -> remove the local image -> pull by digest
#   -> verify the pulled image -> move the human tag in the registry.
# Usage: ci/pipeline.sh REGISTRY_REPO [TARGET]     (e.g. 127.0.0.1:5000/sglang)
# Environment: SGLBUILD (the command), GPU (auto|require|off), MODEL (for the serving check),
#              PROFILE (profile file), OUT (reports, default out/pipeline).
set -euo pipefail
repo=${1:?usage: ci/pipeline.sh REGISTRY_REPO [TARGET]}
target=${2:-}
sglbuild=${SGLBUILD:-sglbuild}
gpu=${GPU:-auto}
out=${OUT:-out/pipeline}
profile=(--profile "${PROFILE:-sglbuild.toml}")
mkdir -p "$out"
field() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$out/build.json" "$1"; }

echo "== build" >&2
$sglbuild "${profile[@]}" lock --check $target
$sglbuild "${profile[@]}" fetch --quiet $target
$sglbuild "${profile[@]}" build --json $target > "$out/build.json"
image=$(field image_id)
human=$(field tag)
tag=${human##*:}

echo "== verify $image (static)" >&2
$sglbuild "${profile[@]}" verify "$image" --gpu off --format junit --output "$out/verify-static.xml" >/dev/null

echo "== push to $repo" >&2
ref=$($sglbuild push "$image" "$repo")
echo "$ref" > "$out/digest.txt"

echo "== remove the local image, pull $ref" >&2
/usr/bin/docker image inspect --format '{{join .RepoTags " "}}' "$image" | tr ' ' '\n' | grep . | xargs -r /usr/bin/docker rmi >/dev/null
if /usr/bin/docker image inspect "$image" >/dev/null 2>&1; then echo "pipeline: the local image is still there" >&2; exit 1; fi
/usr/bin/docker pull --quiet "$ref" >/dev/null

echo "== verify the pulled image (--gpu $gpu)" >&2
$sglbuild "${profile[@]}" verify "$ref" --gpu "$gpu" ${MODEL:+--model "$MODEL"} --format junit --output "$out/verify-pulled.xml" >/dev/null

echo "== move $repo:$tag to $ref" >&2
promote_args=()
[ "$gpu" = require ] && promote_args+=(--require-gpu)
$sglbuild promote "${promote_args[@]}" "$ref" "$tag"
echo "$ref"
