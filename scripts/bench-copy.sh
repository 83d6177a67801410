#!/usr/bin/env bash
# The copy benchmark: `image-rebase rebase` onto a new base on another registry, which
# copies the new base's layer (SIZE MiB of random bytes, so gzip cannot shrink it) from one
# local registry to another, next to `skopeo copy` of the same image between the same two
# registries in the same run: elapsed time, throughput of the layer, and peak memory (max
# RSS, GNU time). Not a timed test: numbers for the README.
#
#   scripts/bench-copy.sh [--size MIB] [--rounds R] [--out FILE] [--keep]
#
#   --size MIB   the layer's size (default 256; the memory goal is for 1024)
#   --rounds R   measure each tool R times, alternating which goes first (default 3);
#                every round copies into a registry of its own: skopeo's blob info cache
#                would otherwise mount the layer from an earlier round's copy
#   --out FILE   where the report goes too (default target/bench-copy-report.txt)
#   --keep       keep the work directory (registry data and logs)
#
# Everything is on 127.0.0.1; both registries use filesystem storage on the same disk.
# Needs what scripts/install-deps.sh installs, and GNU time.
set -euo pipefail
export LC_ALL=C
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
script_messages bench-copy



size=256 rounds=3 keep=0 out=""
while (($# > 0)); do
	case $1 in
	--size) size=${2:?--size needs a value} && shift 2 ;;
	--rounds) rounds=${2:?--rounds needs a value} && shift 2 ;;
	--out) out=$(realpath -m -- "${2:?--out needs a value}") && shift 2 ;;
	--keep) keep=1 && shift ;;
	-h | --help) usage 0 ;;
	*) echo "bench-copy: unknown argument $1" >&2 && usage ;;
	esac
done
[[ $size =~ ^[1-9][0-9]*$ ]] || die "--size must be a positive number of MiB"
[[ $rounds =~ ^[1-9][0-9]*$ ]] || die "--rounds must be a positive number"
[[ -x /usr/bin/time ]] || die "GNU time (/usr/bin/time) is needed: apt-get install time"

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
target_dir=${CARGO_TARGET_DIR:-$root/target}
out=${out:-$target_dir/bench-copy-report.txt}
bin=$target_dir/release/image-rebase

say "building (cargo build --release)"
cargo build --release --quiet

mkdir -p "$target_dir"
wd=$(mktemp -d "$target_dir/bench-copy.XXXXXX")
src_pid="" dst_pid=""
cleanup() {
	local pid
	for pid in $src_pid $dst_pid; do
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	if ((keep)); then
		echo "bench-copy: kept $wd" >&2
	else
		rm -rf "$wd"
	fi
}
trap cleanup EXIT

# The bases on one registry; the apps on another, a new one each round.
start_registry "$wd/src"
src=$REGISTRY src_pid=$REGISTRY_PID
unset REGISTRY_PID
dst=""
new_destination() {
	if [[ -n $dst_pid ]]; then
		kill "$dst_pid" 2>/dev/null || true
		wait "$dst_pid" 2>/dev/null || true
	fi
	start_registry "$wd/dst-$1"
	dst=$REGISTRY dst_pid=$REGISTRY_PID
	unset REGISTRY_PID
}
say "bases on $src"

say "building a base with a $size MiB layer of random bytes"
(
	cd "$wd"
	mkdir -p v1/etc v2/data app/app
	echo 1 >v1/etc/v1
	head -c "${size}M" /dev/urandom >v2/data/big
	echo hello >app/app/hello
	build_image layout base-v1 v1
	build_image layout base-v2 v2
	build_image layout app --from base-v1 app
	push_image layout base-v1 "$src/library/base:v1"
	push_image layout base-v2 "$src/library/base:v2"
)
layer_bytes=$(skopeo inspect --tls-verify=false --raw "docker://$src/library/base:v2" |
	jq '[.layers[].size] | add')
say "the new base's layer is $layer_bytes bytes (compressed)"

# measure NAME CMD...: runs CMD under GNU time; sets secs and rss_kib.
measure() {
	local name=$1
	shift
	/usr/bin/time -v -o "$wd/time.$name" "$@" >"$wd/out.$name" 2>"$wd/err.$name" ||
		die "$name failed: $(cat "$wd/err.$name")"
	secs=$(awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, t, ":"); s = 0;
		for (i = 1; i <= n; i++) s = s * 60 + t[i]; print s }' "$wd/time.$name")
	rss_kib=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$wd/time.$name")
}

rate() { awk -v b="$layer_bytes" -v s="$1" 'BEGIN { printf "%.1f", b / 1048576 / s }'; }

declare -a ir_secs=() ir_rss=() sk_secs=() sk_rss=()
run_image_rebase() {
	local r=$1
	(cd "$wd" && push_image layout app "$dst/bench-$r/app:1")
	measure "image-rebase-$r" "$bin" rebase "$dst/bench-$r/app:1" \
		--old-base "$src/library/base:v1" --new-base "$src/library/base:v2" -t rebased
	grep -q "copied" "$wd/err.image-rebase-$r" || die "image-rebase copied nothing: $(cat "$wd/err.image-rebase-$r")"
	ir_secs+=("$secs") ir_rss+=("$rss_kib")
	say "image-rebase round $r: ${secs}s, $(rate "$secs") MiB/s, max RSS $((rss_kib / 1024)) MiB"
}
run_skopeo() {
	local r=$1
	measure "skopeo-$r" skopeo copy --quiet --src-tls-verify=false --dest-tls-verify=false \
		"docker://$src/library/base:v2" "docker://$dst/skopeo-$r/base:v2"
	sk_secs+=("$secs") sk_rss+=("$rss_kib")
	say "skopeo copy  round $r: ${secs}s, $(rate "$secs") MiB/s, max RSS $((rss_kib / 1024)) MiB"
}
for r in $(seq "$rounds"); do
	new_destination "$r"
	if ((r % 2)); then
		run_image_rebase "$r"
		run_skopeo "$r"
	else
		run_skopeo "$r"
		run_image_rebase "$r"
	fi
done

median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
max() { printf '%s\n' "$@" | sort -g | tail -1; }
{
	echo "copy benchmark: a $size MiB random layer ($layer_bytes bytes gzip), registry to registry on 127.0.0.1,"
	echo "$rounds rounds, median time (throughput of the layer), largest max RSS; $(nproc) CPUs"
	s=$(median "${ir_secs[@]}")
	printf '  image-rebase rebase (copies the layer): %6.2f s  %7s MiB/s  max RSS %4d MiB\n' \
		"$s" "$(rate "$s")" $(($(max "${ir_rss[@]}") / 1024))
	s=$(median "${sk_secs[@]}")
	printf '  skopeo copy (the new base image):       %6.2f s  %7s MiB/s  max RSS %4d MiB\n' \
		"$s" "$(rate "$s")" $(($(max "${sk_rss[@]}") / 1024))
} | tee "$out"
say "report written to $out"
