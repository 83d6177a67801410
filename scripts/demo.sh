#!/usr/bin/env bash
# The demo: builds image-rebase, starts a throwaway registry on 127.0.0.1, pushes a base
# (v1), a patched base (v2) and an application built on v1, rebases the application onto
# v2 (porcelain, plumbing pipeline, and a Docker schema 2 copy), and checks the result with
# independent tools (skopeo, umoci). Exits non-zero if any check fails.
# Installs what it needs first (scripts/install-deps.sh), as scripts/test.sh does.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
scripts/install-deps.sh
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

failures=0
section() { printf '\n== %s\n' "$*"; }
ok() { printf '  ok    %s\n' "$*"; }
bad() {
	printf '  FAIL  %s\n' "$*"
	failures=$((failures + 1))
}
# check DESCRIPTION COMMAND...: runs COMMAND, reports ok/FAIL.
check() {
	local what=$1
	shift
	if "$@"; then ok "$what"; else bad "$what"; fi
}
# json_true JSON FILTER: whether jq FILTER is true for JSON.
json_true() { jq -e "$2" <<<"$1" >/dev/null; }
# matches STRING REGEX
matches() { [[ $1 =~ $2 ]]; }
die() {
	printf '  FAIL  %s\n' "$*" >&2
	exit 1
}

echo "building image-rebase (cargo build --release)"
cargo build --release --quiet || die "cargo build failed"
bin=$root/target/release/image-rebase

work=$(mktemp -d "${TMPDIR:-/tmp}/image-rebase-demo.XXXXXX")
cleanup() {
	stop_registry
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_registry "$work/registry"
echo "registry: $REGISTRY (pid $REGISTRY_PID)"

# --- sample images -------------------------------------------------------------------
src=$work/src
mkdir -p "$src/base-v1/etc" "$src/base-v2/etc" "$src/app/app"
echo 'NAME="base v1"' >"$src/base-v1/etc/os-release"
echo 'only in base v1' >"$src/base-v1/etc/base-v1-only"
echo 'NAME="base v2"' >"$src/base-v2/etc/os-release"
echo 'only in base v2' >"$src/base-v2/etc/base-v2-only"
echo 'hello from the app' >"$src/app/app/hello.txt"

layout=$work/layout
build_image "$layout" base-v1 --env PATH=/usr/bin:/bin --label base.version=1 "$src/base-v1"
build_image "$layout" base-v2 --env PATH=/usr/local/bin:/usr/bin:/bin --label base.version=2 "$src/base-v2"
build_image "$layout" app --from base-v1 --env APP_MODE=demo "$src/app"

base_v1=$REGISTRY/library/base:v1
base_v2=$REGISTRY/library/base:v2
app=$REGISTRY/demo/app:1
app_docker=$REGISTRY/demo/app-docker:1
push_image "$layout" base-v1 "$base_v1"
push_image "$layout" base-v2 "$base_v2"
push_image "$layout" app "$app"
push_image "$layout" app "$app_docker" v2s2

# --- helpers over manifests ----------------------------------------------------------
digest_of() { raw_manifest "$1" | sha256sum | sed 's/^/sha256:/; s/ .*//'; }
layers_of() { raw_manifest "$1" | jq -r '.layers[].digest'; }
short() { local d=${1#sha256:}; echo "${d:0:12}"; }

v1_layers=$(layers_of "$base_v1")
v2_layers=$(layers_of "$base_v2")
app_layers=$(layers_of "$app")
top_layers=$(tail -n +"$(($(wc -l <<<"$v1_layers") + 1))" <<<"$app_layers")
expected_layers=$(printf '%s\n%s\n' "$v2_layers" "$top_layers")

# "<short digest> (origin)" for each layer of REF, on one line.
describe_layers() {
	local d origin out=()
	for d in $(layers_of "$1"); do
		if grep -qxF "$d" <<<"$v1_layers"; then
			origin="base v1"
		elif grep -qxF "$d" <<<"$v2_layers"; then
			origin="base v2"
		elif grep -qxF "$d" <<<"$top_layers"; then
			origin="app"
		else
			origin="?"
		fi
		out+=("$(short "$d") ($origin)")
	done
	printf '%s, ' "${out[@]}" | sed 's/, $//'
}

# show_image LABEL REF: REF's manifest digest and layers.
show_image() {
	printf '  %-7s %s\n          layers: %s\n' "$1" "$(digest_of "$2")" "$(describe_layers "$2")"
}

# Reads "METHOD URI STATUS" lines (registry_requests) and prints how many moved layer
# data: GET of a layer blob, PUT completing an upload of a layer blob, PATCH of an upload
# that completed as a layer blob or never completed. Layer digests are the arguments.
layer_blob_requests() {
	awk -v layers="$*" '
		BEGIN {
			n = split(layers, l, " ")
			for (i = 1; i <= n; i++) { sub(/^sha256:/, "", l[i]); if (l[i] != "") layer[l[i]] = 1 }
		}
		{ uri = $2; gsub(/%3[Aa]/, ":", uri) }
		$1 == "GET" && match(uri, /\/blobs\/sha256:[0-9a-f]+/) {
			if (substr(uri, RSTART + 14, RLENGTH - 14) in layer) count++
			next
		}
		($1 == "PATCH" || $1 == "PUT") && match(uri, /\/blobs\/uploads\/[^?\/]+/) {
			id = substr(uri, RSTART + 15, RLENGTH - 15)
			if ($1 == "PATCH") { patches[id]++; next }
			if (match(uri, /digest=sha256:[0-9a-f]+/) && !(substr(uri, RSTART + 14, RLENGTH - 14) in layer)) {
				done_other[id] = 1
			} else {
				count++
			}
		}
		END {
			for (id in patches) if (!(id in done_other)) count += patches[id]
			print count + 0
		}'
}

# report_requests FROM TO: what the registry logged between the two log offsets, and the
# layer data check.
report_requests() {
	local requests summary mounts moved
	requests=$(registry_requests "$1" "$2")
	summary=$(awk '{ n[$1]++ } END {
		split("GET HEAD POST PATCH PUT DELETE", order, " ")
		for (i = 1; i <= 6; i++) if (order[i] in n) s = s (s == "" ? "" : ", ") order[i] " " n[order[i]]
		print NR " (" s ")"
	}' <<<"$requests")
	mounts=$(grep -c '^POST .*[?&]mount=' <<<"$requests" || true)
	moved=$(layer_blob_requests "$(echo "$v1_layers" "$v2_layers" "$app_layers" | tr '\n' ' ')" <<<"$requests")
	echo "  registry requests: $summary; blob mounts: $mounts"
	check "layer blob GET/PUT/PATCH requests: $moved (expected 0)" test "$moved" -eq 0
}

# check_rootfs REF: unpacks REF with skopeo + umoci and checks its files.
check_rootfs() {
	local ref=$1 dir
	dir=$work/unpack-$((++unpacked))
	if ! unpack_image "$ref" "$dir"; then
		bad "unpacking $ref with skopeo + umoci"
		return
	fi
	local rootfs=$dir/bundle/rootfs
	echo "  files: $(cd "$rootfs" && find . -type f | sed 's/^\.//' | sort | tr '\n' ' ')"
	check "/etc/base-v2-only present" test -f "$rootfs/etc/base-v2-only"
	check "/app/hello.txt present" test -f "$rootfs/app/hello.txt"
	check "/etc/base-v1-only gone" test ! -e "$rootfs/etc/base-v1-only"
	check "/etc/os-release says base v2" grep -q 'base v2' "$rootfs/etc/os-release"
}
unpacked=0

# check_pushed PRINTED REPO TAG: PRINTED is [host/]REPO@sha256:<hex>, the registry serves
# a manifest with that digest in $REGISTRY/REPO, and TAG points to it.
check_pushed() {
	local printed=$1 repo=$2 tag=$3 digest=${1##*@}
	check "printed reference is [host/]$repo@sha256:<digest>" \
		matches "$printed" "^(.+/)?$repo@sha256:[0-9a-f]{64}\$"
	check "manifest fetched by that digest hashes to it" \
		test "$(digest_of "$REGISTRY/$repo@$digest")" = "$digest"
	check "tag $tag points to it" test "$(digest_of "$REGISTRY/$repo:$tag")" = "$digest"
}

# check_layers REF: REF's layers are the new base's followed by the app's own.
check_layers() {
	check "layers = base v2 layers + app layers" test "$(layers_of "$1")" = "$expected_layers"
}

# --- porcelain -----------------------------------------------------------------------
section "rebase demo/app:1 from library/base:v1 onto library/base:v2"
echo "  \$ image-rebase rebase \$REGISTRY/demo/app:1 --old-base \$REGISTRY/library/base:v1 --new-base \$REGISTRY/library/base:v2 --tag rebased"
offset=$(registry_log_mark)
if ! rebased=$("$bin" rebase "$app" --old-base "$base_v1" --new-base "$base_v2" --tag rebased </dev/null); then
	die "image-rebase rebase failed"
fi
echo "  -> $rebased"
report_requests "$offset" "$(registry_log_mark)"
show_image before "$app"
show_image after "$rebased"
check_pushed "$rebased" demo/app rebased
check_layers "$rebased"
config=$(raw_config "$rebased")
check "config: label base.version=2 (new base), APP_MODE=demo kept (app)" json_true "$config" \
	'.config.Labels["base.version"] == "2" and (.config.Env | index("APP_MODE=demo") != null)'
check "config: PATH from the new base" json_true "$config" \
	'.config.Env | index("PATH=/usr/local/bin:/usr/bin:/bin") != null' 
check_rootfs "$rebased"

# --- plumbing ------------------------------------------------------------------------
section "the same rebase with the plumbing pipeline"
echo "  \$ image-rebase fetch-manifest IMG | ... fetch-manifest --as old-base OLD | ... --as new-base NEW"
echo "      | ... fetch-config | ... split-history | ... splice | ... put-manifest --tag rebased-pipeline"
offset=$(registry_log_mark)
if ! pipeline=$("$bin" fetch-manifest "$app" </dev/null |
	"$bin" fetch-manifest --as old-base "$base_v1" |
	"$bin" fetch-manifest --as new-base "$base_v2" |
	"$bin" fetch-config |
	"$bin" split-history |
	"$bin" splice |
	"$bin" put-manifest --tag rebased-pipeline); then
	die "the plumbing pipeline failed"
fi
pipeline_ref=$(jq -r .pushed.reference <<<"$pipeline") || die "put-manifest output is not JSON with .pushed.reference: $pipeline"
echo "  -> $pipeline_ref"
report_requests "$offset" "$(registry_log_mark)"
echo "  rebase:   ${rebased##*@}"
echo "  pipeline: ${pipeline_ref##*@}"
check "pipeline and rebase give the same digest" test "${pipeline_ref##*@}" = "${rebased##*@}"
check_pushed "$pipeline_ref" demo/app rebased-pipeline

# --- Docker schema 2 -----------------------------------------------------------------
section "rebase the Docker schema 2 copy demo/app-docker:1 (bases are OCI)"
offset=$(registry_log_mark)
if ! rebased_docker=$("$bin" rebase "$app_docker" --old-base "$base_v1" --new-base "$base_v2" --tag rebased </dev/null); then
	die "image-rebase rebase of the Docker schema 2 image failed"
fi
echo "  -> $rebased_docker"
report_requests "$offset" "$(registry_log_mark)"
show_image before "$app_docker"
show_image after "$rebased_docker"
check_pushed "$rebased_docker" demo/app-docker rebased
check_layers "$rebased_docker"
check "manifest stays Docker schema 2, no OCI media types mixed in" \
	json_true "$(raw_manifest "$rebased_docker")" \
	'.mediaType == "application/vnd.docker.distribution.manifest.v2+json"
		and .config.mediaType == "application/vnd.docker.container.image.v1+json"
		and all(.layers[]; .mediaType == "application/vnd.docker.image.rootfs.diff.tar.gzip")' 
check_rootfs "$rebased_docker"

echo
if ((failures > 0)); then
	echo "demo: $failures check(s) failed"
	exit 1
fi
echo "demo: all checks passed"
