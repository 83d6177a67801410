#!/usr/bin/env bash
# The find benchmark: tags examined per second by `image-rebase find` against a local CNCF
# distribution registry, next to the ceiling: `examples/ceiling.rs find`, a bare loop of
# the minimal requests at the same concurrency (catalog pages, tag lists, and per tag a
# HEAD, a GET, or a HEAD plus a GET by digest for digests not seen yet, which is what
# find sends), with nothing parsed beyond the lists. Every time is the wall time of the
# whole process, start-up included.
#
#   scripts/bench-find.sh [--repos R] [--tags T] [--jobs "1 8"] [--rounds N] [--out FILE] [--keep]
#
#   --repos R     repositories seeded (default 1100: the catalog takes two pages)
#   --tags T      tags per repository, each its own manifest (default 2)
#   --jobs LIST   the --jobs values measured (default "1 8")
#   --rounds N    measure each run N times, alternating the order, and report the
#                 median (default 3)
#   --out FILE    where the report goes too (default target/bench-find-report.txt)
#   --keep        keep the work directory (registry data and logs)
#
# Everything is on 127.0.0.1. Needs what scripts/install-deps.sh installs.
set -euo pipefail
export LC_ALL=C
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
script_messages bench-find


repos=1100 per=2 jobs_list="1 8" rounds=3 out="" keep=0
while (($# > 0)); do
	case $1 in
	--repos) repos=${2:?--repos needs a value} && shift 2 ;;
	--tags) per=${2:?--tags needs a value} && shift 2 ;;
	--jobs) jobs_list=${2:?--jobs needs a value} && shift 2 ;;
	--rounds) rounds=${2:?--rounds needs a value} && shift 2 ;;
	--out) out=$(realpath -m -- "${2:?--out needs a value}") && shift 2 ;;
	--keep) keep=1 && shift ;;
	-h | --help) usage 0 ;;
	*) echo "bench-find: unknown argument $1" >&2 && usage ;;
	esac
done
for n in "$repos" "$per" "$rounds" $jobs_list; do
	[[ $n =~ ^[1-9][0-9]*$ ]] || die "not a positive number: $n"
done
count=$((repos * per))
((count >= 2000)) || say "note: $count tags; the benchmark is meant for at least 2,000"

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
out=${out:-$root/target/bench-find-report.txt}
[[ -x /usr/bin/docker-registry ]] || die "docker-registry is missing: run scripts/install-deps.sh"

say "building (cargo build --release, and the ceiling example)"
cargo build --release --quiet
cargo build --release --quiet --example ceiling
target=${CARGO_TARGET_DIR:-$root/target}
bin=$target/release/image-rebase
ceiling=$target/release/examples/ceiling

work=$(mktemp -d "${TMPDIR:-/tmp}/image-rebase-bench-find.XXXXXX")
cleanup() {
	stop_registry
	if ((keep)); then say "work directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_registry "$work/registry"
say "registry on $REGISTRY (pid $REGISTRY_PID)"

layers=$work/layers
mkdir -p "$layers" "$work/src/v1/etc" "$work/src/v2/etc" "$work/src/app/app"
echo 'NAME="base v1"' >"$work/src/v1/etc/os-release"
echo 'NAME="base v2"' >"$work/src/v2/etc/os-release"
echo 'hello from the app' >"$work/src/app/app/hello.txt"
for l in v1 v2 app; do
	make_layer "$layers/$l.tar" "$work/src/$l"
	gzip -n -c "$layers/$l.tar" >"$layers/$l.tar.gz"
done
say "seeding $count tags in $repos repositories"
"$ceiling" bases --registry "$REGISTRY" --layers "$layers" --repos "$repos" ||
	die "pushing the bases failed"
"$ceiling" seed --registry "$REGISTRY" --layers "$layers" --prefix t --count "$count" \
	--repos "$repos" --jobs 8 >/dev/null || die "seeding failed"
# base:v1 and base:v2 have tags too.
tags=$((count + 2))

now() { date +%s.%N; }
calc() { awk "BEGIN { $1 }"; }

# measure KIND JOBS: one run; prints its tags per second (wall time).
measure() {
	local kind=$1 j=$2 t0 t1 found
	t0=$(now)
	case $kind in
	find)
		"$bin" find --base "$REGISTRY/base:v1" --jobs "$j" "$REGISTRY" >"$work/found.jsonl" \
			2>"$work/find.err" || die "find failed: $(cat "$work/find.err")"
		t1=$(now)
		found=$(wc -l <"$work/found.jsonl")
		((found == count)) || die "find listed $found images, expected $count"
		;;
	*)
		"$ceiling" find --registry "$REGISTRY" --jobs "$j" --request "$kind" >"$work/ceiling.out" ||
			die "the ceiling ($kind) failed"
		t1=$(now)
		grep -q "^tags $tags " "$work/ceiling.out" || die "the ceiling saw: $(cat "$work/ceiling.out")"
		;;
	esac
	calc "printf \"%.1f\", $tags / ($t1 - $t0)"
}

median() { tr ' ' '\n' | grep . | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

kinds=(find head get head-get)
declare -A rates=()
# A warm-up run, so that the first measured one does not pay for cold caches alone.
measure find 8 >/dev/null
for j in $jobs_list; do
	for ((r = 0; r < rounds; r++)); do
		order=("${kinds[@]}")
		if ((r % 2)); then order=(head-get get head find); fi
		for k in "${order[@]}"; do
			rate=$(measure "$k" "$j")
			rates[$k $j]+="$rate "
			say "--jobs $j round $((r + 1)): $k $rate tags/s"
		done
	done
done

pct() { calc "printf \"%.0f\", 100 * $1 / $2"; }
{
	echo "find benchmark: $tags tags in $((repos + 1)) repositories (each tag its own manifest),"
	echo "registry $(/usr/bin/docker-registry --version 2>/dev/null | awk '{ print $NF }') on 127.0.0.1, filesystem storage; $(nproc) CPUs;"
	echo "tags/s = tags / wall time of the process, median of $rounds rounds."
	echo
	printf '%-7s %10s %10s %10s %10s | %9s %9s %9s\n' --jobs find head get head-get \
		find/head find/get find/h-g
	for j in $jobs_list; do
		declare -A m=()
		for k in "${kinds[@]}"; do m[$k]=$(median <<<"${rates[$k $j]}"); done
		printf '%-7s %10s %10s %10s %10s | %8s%% %8s%% %8s%%\n' "$j" "${m[find]}" "${m[head]}" \
			"${m[get]}" "${m[head-get]}" "$(pct "${m[find]}" "${m[head]}")" \
			"$(pct "${m[find]}" "${m[get]}")" "$(pct "${m[find]}" "${m[head-get]}")"
	done
	echo
	echo "head: one HEAD per tag; get: one GET per tag; head-get: a HEAD per tag and a GET by"
	echo "digest per manifest not seen yet (the requests find sends, less its ping and base)."
} | tee "$out"
