#!/usr/bin/env bash
# The image pipeline of .github/workflows/image.yml, on one machine, against any registry:
#   per platform, on that platform's engine (its "runner"): fetch --platform -> build --platform (the gate verifies
#   before tagging) -> push --platform, signed, by digest
#   then: join the digests into the target's index (each checked from the registry: platform, signature, verdicts)
#   -> verify each platform by the index's digest -> promote the human tag once every platform's verdict passed.
# Usage: ci/pipeline.sh REGISTRY_REPO [TARGET]          (e.g. 127.0.0.1:5000/sglang)
# Environment:
#   SGLBUILD            the command (default: sglbuild)
#   PROFILE             the profile file (default: sglbuild.toml)
#   ENGINE_AMD64, ENGINE_ARM64
#                       the DOCKER_HOST of each platform's runner (default: this shell's engine for both; make
#                       pipeline gives arm64 the second engine of ci/engine.sh)
#   REPO_ARM64          the same registry as an arm64 runner reaches it (default: REGISTRY_REPO)
#   SIGN_KEY            the private key to sign with (default: a key made for this run under OUT)
#   GPU                 off (default: the registry's attested verdicts) | auto | require (pull by digest, probe here)
#   OUT                 reports, digests and timings (default: out/pipeline)
set -euo pipefail
repo=${1:?usage: ci/pipeline.sh REGISTRY_REPO [TARGET]}
target=${2:-}
sglbuild=${SGLBUILD:-sglbuild}
out=${OUT:-out/pipeline}
gpu=${GPU:-off}
profile=(--profile "${PROFILE:-sglbuild.toml}")
mkdir -p "$out"
elapsed() { python3 -c 'import sys, time; print(round(time.time() - float(sys.argv[1]), 1))' "$1"; }
rm -f "$out"/digest-*.txt "$out"/verdict-*.json "$out"/seconds-*.txt

key=${SIGN_KEY:-}
if [ -z "$key" ]; then
  rm -f "$out/pipeline.key" "$out/pipeline.pub"
  $sglbuild keygen --output "$out/pipeline" >/dev/null
  key=$out/pipeline.key
fi
pub=${key%.key}.pub

# The target's platforms, as the profile declares them (one job each).
$sglbuild "${profile[@]}" plan --json $target > "$out/plan.json"
field() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[0][sys.argv[2]])' "$out/plan.json" "$1"; }
platforms=$(python3 -c 'import json, sys; print(" ".join(p["platform"] for p in json.load(open(sys.argv[1]))))' "$out/plan.json")
name=$(field target)
human=$(field tag)
tag=${human##*:}

for platform in $platforms; do
  arch=${platform#linux/}
  engine_var=ENGINE_${arch^^}; repo_var=REPO_${arch^^}
  engine=${!engine_var:-${DOCKER_HOST:-}}
  job_repo=${!repo_var:-$repo}
  echo "== job $platform (engine ${engine:-default}): fetch, build, push to $job_repo" >&2
  started=$(date +%s.%N)
  (
    [ -n "$engine" ] && export DOCKER_HOST=$engine
    $sglbuild "${profile[@]}" lock --check "$name"
    $sglbuild "${profile[@]}" fetch --quiet --platform "$platform" "$name"
    $sglbuild "${profile[@]}" build --quiet --platform "$platform" "$name"
    $sglbuild "${profile[@]}" push "$name" "$job_repo" --platform "$platform" --sign-key "$key" > "$out/digest-$arch.txt"
  )
  # The job's output: the digest, named by the registry the join reads (one registry, however each runner reaches it).
  sed -i "s#^${job_repo}@#${repo}@#" "$out/digest-$arch.txt"
  elapsed "$started" > "$out/seconds-$arch.txt"
  echo "   $platform: $(cat "$out/digest-$arch.txt") ($(cat "$out/seconds-$arch.txt") s)" >&2
done

echo "== join" >&2
started=$(date +%s.%N)
$sglbuild "${profile[@]}" join "$name" $(cat "$out"/digest-*.txt) --key "$pub" --json > "$out/join.json"
elapsed "$started" > "$out/seconds-join.txt"
index=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["index"])' "$out/join.json")
echo "   $index" >&2

for platform in $platforms; do
  arch=${platform#linux/}
  echo "== verify $platform of $index (--gpu $gpu)" >&2
  if [ "$gpu" = off ]; then  # from the registry alone: the signed verdicts, no layer pulled
    args=(--key "$pub" --require-attestation)
  else                       # pulled by digest and probed here, as a GPU runner of that architecture does
    args=(--gpu "$gpu")
  fi
  $sglbuild "${profile[@]}" verify "$index" --platform "$platform" "${args[@]}" --format json --output "$out/verdict-$arch.json" >/dev/null
done

echo "== promote $repo:$tag" >&2
promote_args=()
[ "$gpu" = require ] && promote_args+=(--require-gpu)
verdicts=()
for f in "$out"/verdict-*.json; do verdicts+=(--verdicts "$f"); done
$sglbuild promote "${promote_args[@]}" "${verdicts[@]}" "$index" "$tag" >&2
echo "$index"
