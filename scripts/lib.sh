# shellcheck shell=bash
# Helpers for the demo and benchmark scripts: a throwaway local registry and reproducible
# OCI test images. Source it from bash (set -euo pipefail is assumed); needs the tools
# scripts/install-deps.sh installs.
#
#   start_registry DIR [STORAGE]  start a registry on a free 127.0.0.1 port, data in DIR
#                                 (STORAGE: filesystem, the default, or inmemory);
#                                 exports REGISTRY (host:port), REGISTRY_PID, REGISTRY_LOG
#   stop_registry                 stop it
#   registry_log_size             current size of the registry log, in bytes
#   registry_log_mark             log offset after which later requests are logged
#   registry_requests [FROM [TO]] "METHOD URI STATUS" for each request the registry logged
#                                 between byte offsets FROM and TO of its log (default: all);
#                                 take offsets with registry_log_mark
#   make_layer OUT SRCDIR         reproducible tar of SRCDIR (gzip-compressed if OUT ends .gz)
#   build_image LAYOUT TAG [options] [--] LAYERDIR...
#                                 reproducible OCI image in an OCI layout (see below)
#   push_image LAYOUT TAG REF [v2s2]
#                                 copy LAYOUT:TAG to docker://REF (v2s2: Docker schema 2)
#   unpack_image REF OUTDIR       pull REF and unpack it; files in OUTDIR/bundle/rootfs
#   raw_manifest REF / raw_config REF
#                                 the manifest / config bytes of REF as the registry has them
#
# Call start_registry directly, not in $(...) or a pipeline: the registry must be a child
# of the calling shell for stop_registry to reap it.

# This file's folder: the registry configuration (registry.yml) is beside it.
_lib_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# Every timestamp in test images: pinned so that digests are the same run to run.
FIXTURE_TIME=2020-01-01T00:00:00Z

# script_messages NAME: defines die (message, exit 1), say (a progress message with the
# seconds so far) and usage (the calling script's header, from its "# Usage:" or
# "#   scripts/NAME.sh" line to its "#   --keep" line; exit status $1, default 2) for the
# script NAME.
# shellcheck disable=SC2317 # the functions are called by the script, not here
script_messages() {
	_script=$1
	die() {
		echo "$_script: $*" >&2
		exit 1
	}
	say() { printf '%s: [%4ds] %s\n' "$_script" "$SECONDS" "$*" >&2; }
	usage() {
		sed -n "/^# Usage:\$\|^#   scripts\/$_script.sh/,/^#   --keep/p" "$0" | sed 's/^# \{0,1\}//' >&2
		exit "${1:-2}"
	}
}

_lib_die() {
	echo "lib.sh: $*" >&2
	return 1
}

# A TCP port nobody listens on now, on any address (read from /proc/net/tcp{,6}).
_free_port() {
	local used port
	used=$(awk 'FNR > 1 && $4 == "0A" { split($2, a, ":"); print a[2] }' \
		/proc/net/tcp /proc/net/tcp6 2>/dev/null || true)
	while :; do
		port=$((20000 + RANDOM % 40000))
		grep -qxF "$(printf '%04X' "$port")" <<<"$used" || break
	done
	echo "$port"
}

# Whether a registry answers GET PATH (default /v2/) with 200 on 127.0.0.1:PORT
# (bash /dev/tcp, no curl).
_registry_answers() {
	local port=$1 path=${2:-/v2/}
	(
		exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
		printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1:%s\r\n\r\n' "$path" "$port" >&3
		IFS= read -r -t 2 status <&3 || exit 1
		[[ $status == "HTTP/1."?" 200"* ]]
	) 2>/dev/null
}

start_registry() {
	local dir=${1:?usage: start_registry DIR [filesystem|inmemory]} backend=${2:-filesystem}
	local port attempt i pid storage config
	local -a scrub=()
	mkdir -p "$dir/data"
	dir=$(cd "$dir" && pwd)
	case $backend in
	filesystem) storage=$(printf '  filesystem:\n    rootdirectory: %s/data' "$dir") ;;
	inmemory) storage='  inmemory:' ;;
	*) _lib_die "start_registry: unknown storage $backend (filesystem or inmemory)" || return 1 ;;
	esac
	# The registry reads REGISTRY_* variables as configuration overrides
	# (e.g. REGISTRY_HTTP_ADDR): keep the caller's out of it.
	for i in $(compgen -e); do
		[[ $i == REGISTRY_* ]] && scrub+=(-u "$i")
	done
	# A port can be taken between choosing and binding it: then the registry exits
	# at once, and another port is tried.
	for attempt in 1 2 3 4 5; do
		port=$(_free_port)
		config=$(<"$_lib_dir/registry.yml")
		config=${config//@STORAGE@/$storage}
		printf '%s\n' "${config//@ADDR@/127.0.0.1:$port}" >"$dir/config.yml"
		env "${scrub[@]}" /usr/bin/docker-registry serve "$dir/config.yml" \
			</dev/null >"$dir/registry.log" 2>&1 &
		pid=$!
		# Known at once, so that an exit trap calling stop_registry stops it.
		REGISTRY_PID=$pid
		# Up to 10 s for it to answer.
		for i in $(seq 100); do
			# The log line tells that this registry bound the port (another process
			# may answer on it too).
			if grep -qF "listening on 127.0.0.1:$port" "$dir/registry.log" &&
				_registry_answers "$port"; then
				export REGISTRY="127.0.0.1:$port" REGISTRY_PID=$pid REGISTRY_LOG="$dir/registry.log"
				return 0
			fi
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			kill "$pid" 2>/dev/null || true
			wait "$pid" 2>/dev/null || true
			unset REGISTRY_PID
			cat "$dir/registry.log" >&2
			_lib_die "registry on 127.0.0.1:$port did not answer within 10 s (log above)"
			return 1
		fi
		wait "$pid" 2>/dev/null || true
		unset REGISTRY_PID
		if ! grep -q 'address already in use' "$dir/registry.log"; then
			cat "$dir/registry.log" >&2
			_lib_die "registry exited at start (log above)"
			return 1
		fi
		echo "lib.sh: port $port was taken, retrying ($attempt)" >&2
	done
	_lib_die "no free port found for the registry"
}

stop_registry() {
	[[ -n ${REGISTRY_PID:-} ]] || return 0
	kill "$REGISTRY_PID" 2>/dev/null || true
	wait "$REGISTRY_PID" 2>/dev/null || true
	unset REGISTRY REGISTRY_PID
}

registry_log_size() {
	stat -c %s "${REGISTRY_LOG:?no registry started}"
}

# The registry writes a request's log lines after it has sent the response, so a client
# can finish before its last requests are logged. registry_log_mark sends a marker request
# (GET /v2/?mark=N), waits until the registry has logged it, and prints the log size then:
# every request that finished before the call is logged before that offset.
registry_log_mark() {
	[[ -n ${REGISTRY:-} ]] || _lib_die "no registry started" || return 1
	local mark=$RANDOM$RANDOM i
	_registry_answers "${REGISTRY##*:}" "/v2/?mark=$mark" ||
		_lib_die "registry $REGISTRY does not answer" || return 1
	for i in $(seq 100); do
		# The access-log line is the last one the registry writes for a request.
		if grep -qF "\"GET /v2/?mark=$mark HTTP/" "$REGISTRY_LOG"; then
			registry_log_size
			return 0
		fi
		sleep 0.05
	done
	_lib_die "registry did not log the marker request within 5 s"
}

# Parses the registry's own log lines, e.g.
#   time=... level=info msg="response completed" ... http.request.method=GET
#   ... http.request.uri=/v2/ ... http.response.status=200 ...
# (values with special characters are double-quoted). The access-log copy of each request
# (Apache combined format) is not counted twice.
registry_requests() {
	local from=${1:-0} to=${2:-}
	[[ -n $to ]] || to=$(registry_log_size)
	head -c "$to" "${REGISTRY_LOG:?no registry started}" | tail -c +"$((from + 1))" | awk '
		function field(name,    v) {
			if (!match($0, " " name "=(\"[^\"]*\"|[^ ]*)")) return ""
			v = substr($0, RSTART + length(name) + 2, RLENGTH - length(name) - 2)
			gsub(/^"|"$/, "", v)
			return v
		}
		/msg="response completed/ && !/ http.request.uri="?\/v2\/\?mark=/ {
			print field("http.request.method"), field("http.request.uri"), field("http.response.status")
		}'
}

make_layer() {
	local out=${1:?usage: make_layer OUT SRCDIR} src=${2:?usage: make_layer OUT SRCDIR}
	[[ -d $src ]] || _lib_die "make_layer: $src is not a directory" || return 1
	# Modes normalised so the caller's umask does not change the digest.
	local -a tar_cmd=(tar --format=gnu --sort=name --mtime=@0 --owner=0 --group=0
		--numeric-owner "--mode=a+rX,u+w,go-w" -C "$src" -cf - .)
	case $out in
	*.gz) "${tar_cmd[@]}" | gzip -n >"$out" ;;
	*) "${tar_cmd[@]}" >"$out" ;;
	esac
}

# build_image LAYOUT TAG [--from TAG] [--env K=V]... [--label K=V]...
#             [--annotation K=V]... [--] LAYERDIR...
# Builds LAYOUT:TAG (creating the layout if needed; replacing TAG if it exists): starts
# empty (linux/amd64) or from the image tagged --from, then, like a Dockerfile, one
# empty-layer history entry per --env / --label in the order given ("ENV K=V",
# "LABEL K=V", comment buildkit.dockerfile.v0), then one layer per LAYERDIR
# ("COPY <dir name> / # buildkit"). --annotation sets a manifest annotation.
# Every timestamp is $FIXTURE_TIME, so the manifest digest is the same on every run.
build_image() {
	local usage="usage: build_image LAYOUT TAG [--from TAG] [--env K=V]... [--label K=V]... [--annotation K=V]... [--] LAYERDIR..."
	local layout=${1:?$usage} tag=${2:?$usage} from="" dir tmp
	local -a steps=() annotations=() dirs=()
	shift 2
	while (($# > 0)); do
		case $1 in
		--from) from=${2:?$usage} && shift 2 ;;
		--env | --label) steps+=("$1" "${2:?$usage}") && shift 2 ;;
		--annotation) annotations+=(--manifest.annotation "${2:?$usage}") && shift 2 ;;
		--) shift && dirs+=("$@") && break ;;
		-*) _lib_die "build_image: unknown option $1; $usage" || return 1 ;;
		*) dirs+=("$1") && shift ;;
		esac
	done

	[[ -f $layout/index.json ]] || umoci init --layout "$layout"
	if umoci ls --layout "$layout" | grep -qxF "$tag"; then
		umoci rm --image "$layout:$tag"
	fi
	if [[ -n $from ]]; then
		umoci tag --image "$layout:$from" "$tag"
	else
		umoci new --image "$layout:$tag"
		umoci config --image "$layout:$tag" --no-history --created "$FIXTURE_TIME" \
			--os linux --architecture amd64
	fi

	local -a pinned=(--created "$FIXTURE_TIME" --history.created "$FIXTURE_TIME")
	set -- "${steps[@]}"
	while (($# > 0)); do
		case $1 in
		--env) umoci config --image "$layout:$tag" "${pinned[@]}" --config.env "$2" \
			--history.created_by "ENV $2" --history.comment buildkit.dockerfile.v0 ;;
		--label) umoci config --image "$layout:$tag" "${pinned[@]}" --config.label "$2" \
			--history.created_by "LABEL $2" --history.comment buildkit.dockerfile.v0 ;;
		esac
		shift 2
	done

	tmp=$(mktemp -d)
	for dir in "${dirs[@]}"; do
		# Uncompressed: umoci raw add-layer compresses it itself.
		if ! make_layer "$tmp/layer.tar" "$dir" ||
			! umoci raw add-layer --image "$layout:$tag" --history.created "$FIXTURE_TIME" \
				--history.created_by "COPY $(basename "$dir") / # buildkit" \
				--history.comment buildkit.dockerfile.v0 "$tmp/layer.tar"; then
			rm -rf "$tmp"
			return 1
		fi
	done
	rm -rf "$tmp"

	umoci config --image "$layout:$tag" --no-history --created "$FIXTURE_TIME" "${annotations[@]}"
	umoci gc --layout "$layout"
}

push_image() {
	local usage="usage: push_image LAYOUT TAG REF [v2s2]"
	local layout=${1:?$usage} tag=${2:?$usage} ref=${3:?$usage}
	local -a format=()
	case ${4:-} in
	"") ;;
	v2s2) format=(--format v2s2) ;; # note: Docker schema 2 has no annotations; they are dropped
	*) _lib_die "push_image: unknown format ${4}; $usage" || return 1 ;;
	esac
	skopeo copy --quiet --dest-tls-verify=false "${format[@]}" "oci:$layout:$tag" "docker://$ref"
}

unpack_image() {
	local usage="usage: unpack_image REF OUTDIR"
	local ref=${1:?$usage} out=${2:?$usage}
	local -a rootless=()
	[[ $(id -u) -eq 0 ]] || rootless=(--rootless)
	mkdir -p "$out"
	skopeo copy --quiet --src-tls-verify=false "docker://$ref" "oci:$out/layout:img"
	umoci unpack "${rootless[@]}" --image "$out/layout:img" "$out/bundle" >/dev/null
}

raw_manifest() {
	skopeo inspect --tls-verify=false --raw "docker://${1:?usage: raw_manifest REF}"
}

raw_config() {
	skopeo inspect --tls-verify=false --raw --config "docker://${1:?usage: raw_config REF}"
}

# build_index LAYOUT TAG [--attestation] CHILD=OS/ARCH[/VARIANT]...
# Writes a multi-platform OCI index into LAYOUT under TAG that lists the images tagged
# CHILD (built with build_image) with the given platforms, in the order given; with
# --attestation, also a BuildKit-style attestation entry (platform unknown/unknown,
# annotation vnd.docker.reference.type) for the first child. Push it with
# `push_index LAYOUT TAG REF [v2s2]`.
build_index() {
	local usage="usage: build_index LAYOUT TAG [--attestation] CHILD=OS/ARCH[/VARIANT]..."
	local layout=${1:?$usage} tag=${2:?$usage} attest=0 spec child platform os arch variant
	local manifests="[]" digest size first="" blob
	shift 2
	if [[ ${1:-} == --attestation ]]; then attest=1 && shift; fi
	(($# > 0)) || _lib_die "$usage" || return 1
	for spec in "$@"; do
		child=${spec%%=*} platform=${spec#*=}
		IFS=/ read -r os arch variant <<<"$platform"
		digest=$(jq -r --arg t "$child" '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t) | .digest' "$layout/index.json")
		[[ -n $digest ]] || _lib_die "build_index: no image tagged $child in $layout" || return 1
		size=$(stat -c %s "$layout/blobs/sha256/${digest#sha256:}")
		[[ -n $first ]] || first=$digest
		manifests=$(jq -c --arg d "$digest" --argjson s "$size" --arg os "$os" --arg arch "$arch" --arg v "$variant" \
			'. + [{mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $d, size: $s,
			  platform: ({os: $os, architecture: $arch} + (if $v == "" then {} else {variant: $v} end))}]' <<<"$manifests")
	done
	if ((attest)); then
		local statement config att
		statement=$(_lib_blob "$layout" '{"_type":"https://in-toto.io/Statement/v0.1","predicateType":"https://slsa.dev/provenance/v0.2"}')
		config=$(_lib_blob "$layout" '{}')
		att=$(_lib_blob "$layout" "$(jq -cn --arg c "$config" --arg s "$statement" '{schemaVersion: 2,
			mediaType: "application/vnd.oci.image.manifest.v1+json",
			config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: ("sha256:" + ($c | split(" ")[0])), size: ($c | split(" ")[1] | tonumber)},
			layers: [{mediaType: "application/vnd.in-toto+json", digest: ("sha256:" + ($s | split(" ")[0])), size: ($s | split(" ")[1] | tonumber),
			  annotations: {"in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"}}]}')")
		manifests=$(jq -c --arg a "$att" --arg ref "$first" '. + [{mediaType: "application/vnd.oci.image.manifest.v1+json",
			digest: ("sha256:" + ($a | split(" ")[0])), size: ($a | split(" ")[1] | tonumber),
			platform: {os: "unknown", architecture: "unknown"},
			annotations: {"vnd.docker.reference.type": "attestation-manifest", "vnd.docker.reference.digest": $ref}}]' <<<"$manifests")
	fi
	blob=$(_lib_blob "$layout" "$(jq -cn --argjson m "$manifests" '{schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json", manifests: $m}')")
	digest=sha256:${blob%% *} size=${blob##* }
	jq --arg t "$tag" --arg d "$digest" --argjson s "$size" \
		'.manifests = ([.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] != $t)]
		  + [{mediaType: "application/vnd.oci.image.index.v1+json", digest: $d, size: $s,
		      annotations: {"org.opencontainers.image.ref.name": $t}}])' \
		"$layout/index.json" >"$layout/index.json.new" && mv "$layout/index.json.new" "$layout/index.json"
}

# _lib_blob LAYOUT CONTENT: stores CONTENT (no trailing newline) as a blob; prints "HEX SIZE".
_lib_blob() {
	local layout=$1 content=$2 hex
	hex=$(printf '%s' "$content" | sha256sum | cut -d' ' -f1)
	printf '%s' "$content" >"$layout/blobs/sha256/$hex"
	echo "$hex ${#content}"
}

# push_index LAYOUT TAG REF [v2s2]: copies the index and every image it lists.
push_index() {
	local usage="usage: push_index LAYOUT TAG REF [v2s2]"
	local layout=${1:?$usage} tag=${2:?$usage} ref=${3:?$usage}
	local -a format=()
	[[ ${4:-} == v2s2 ]] && format=(--format v2s2)
	skopeo copy --quiet --all --dest-tls-verify=false "${format[@]}" "oci:$layout:$tag" "docker://$ref"
}

# unpack_platform REF OS/ARCH[/VARIANT] OUTDIR: like unpack_image, for one platform of
# a multi-platform image.
unpack_platform() {
	local usage="usage: unpack_platform REF OS/ARCH[/VARIANT] OUTDIR"
	local ref=${1:?$usage} platform=${2:?$usage} out=${3:?$usage} os arch variant
	local -a over=() rootless=()
	IFS=/ read -r os arch variant <<<"$platform"
	over=(--override-os "$os" --override-arch "$arch")
	[[ -z $variant ]] || over+=(--override-variant "$variant")
	[[ $(id -u) -eq 0 ]] || rootless=(--rootless)
	mkdir -p "$out"
	skopeo "${over[@]}" copy --quiet --src-tls-verify=false "docker://$ref" "oci:$out/layout:img"
	umoci unpack "${rootless[@]}" --image "$out/layout:img" "$out/bundle" >/dev/null
}
