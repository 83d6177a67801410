#!/usr/bin/env bash
# The fleet benchmark: throughput of `image-rebase rebase --from-file` against a local
# CNCF distribution registry (filesystem and inmemory storage), next to
#   - the ceiling: examples/ceiling.rs, a bare loop sending exactly the minimal requests
#     for the same kind of images at the same concurrency, with no rebase logic;
#   - the baseline: one `image-rebase rebase IMAGE` process per image, in sequence;
# with the HTTP requests per image counted from the registry's own log, and the peak
# memory (max RSS) of the fleet run.
#
#   scripts/bench.sh [--quick] [--count N] [--baseline N] [--jobs "1 4 8 16"]
#                    [--backends "filesystem inmemory"] [--big-backends "inmemory"]
#                    [--rounds R] [--out FILE] [--keep]
#
#   --count N        images per measured run (default 1000; 250 with --quick)
#   --baseline N     images of the one-process-per-image baseline (default 200; 50 with --quick)
#   --jobs LIST      the --jobs values measured (default "1 4 8 16")
#   --backends LIST  registry storage backends (default "filesystem inmemory")
#   --big-backends LIST
#                    backends on which a fleet run of 4 x --count images measures memory
#                    at scale (default "inmemory": the tool's memory does not depend on
#                    the registry's storage, and that backend is the fastest to seed)
#   --rounds R       measure each fleet and ceiling run R times, alternating which of
#                    the two goes first, and report the median (default 1)
#   --quick          no 4 x --count run, smaller default --count and --baseline
#   --out FILE       where the report goes too (default target/bench-report.txt)
#   --keep           keep the work directory (registry data and logs)
#
# Every run rebases a set of images pushed for it alone just before it (tags <run>-<i>,
# each image with a config of its own), so every run does the same work per image on
# images that have never been rebased. Everything is on 127.0.0.1. Needs what
# scripts/install-deps.sh installs, and GNU time (installed here if missing).
set -euo pipefail
export LC_ALL=C
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
script_messages bench



count="" baseline="" quick=0 keep=0 rounds=1 out=""
jobs_list="1 4 8 16" backends="filesystem inmemory" big_backends="inmemory"
while (($# > 0)); do
	case $1 in
	--count) count=${2:?--count needs a value} && shift 2 ;;
	--baseline) baseline=${2:?--baseline needs a value} && shift 2 ;;
	--jobs) jobs_list=${2:?--jobs needs a value} && shift 2 ;;
	--backends) backends=${2:?--backends needs a value} && shift 2 ;;
	--big-backends) big_backends=${2?--big-backends needs a value} && shift 2 ;;
	--out) out=$(realpath -m -- "${2:?--out needs a value}") && shift 2 ;;
	--rounds) rounds=${2:?--rounds needs a value} && shift 2 ;;
	--quick) quick=1 && shift ;;
	--keep) keep=1 && shift ;;
	-h | --help) usage 0 ;;
	*) echo "bench: unknown argument $1" >&2 && usage ;;
	esac
done
if ((quick)); then
	count=${count:-250} baseline=${baseline:-50} big_backends=""
else
	count=${count:-1000} baseline=${baseline:-200}
fi
[[ $count =~ ^[1-9][0-9]*$ ]] || die "--count must be a positive number, not $count"
[[ $baseline =~ ^[0-9]+$ ]] || die "--baseline must be a number, not $baseline"
[[ $rounds =~ ^[1-9][0-9]*$ ]] || die "--rounds must be a positive number, not $rounds"
for j in $jobs_list; do
	[[ $j =~ ^[1-9][0-9]*$ ]] || die "--jobs: $j is not a positive number"
done
for b in $backends $big_backends; do
	[[ $b == filesystem || $b == inmemory ]] || die "unknown backend $b (filesystem, inmemory)"
done
[[ -n ${jobs_list// /} && -n ${backends// /} ]] || die "--jobs and --backends need at least one value"
big=$((4 * count))
repos=4
# The --jobs of the memory runs: the largest measured, so that the run at --count images
# is one of the throughput runs.
mem_jobs=0
for j in $jobs_list; do
	if ((j > mem_jobs)); then mem_jobs=$j; fi
done

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
out=${out:-$root/target/bench-report.txt}

scripts/install-deps.sh

# GNU time for the peak memory (Debian package "time").
gnu_time() { /usr/bin/time --version 2>&1 | grep -q GNU; }
if ! gnu_time; then
	command -v apt-get >/dev/null || die "GNU time (/usr/bin/time) is missing and there is no apt-get"
	sudo=()
	if [[ $(id -u) -ne 0 ]]; then
		command -v sudo >/dev/null || die "GNU time is missing; not root and no sudo: install the package time"
		sudo=(sudo)
	fi
	say "installing GNU time"
	apt_get=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -y -o Dpkg::Use-Pty=0)
	{ "${apt_get[@]}" update && "${apt_get[@]}" install --no-install-recommends time; } >/dev/null ||
		die "apt-get install time failed"
	gnu_time || die "GNU time still missing after installing the package time"
fi

say "building (cargo build --release, and the ceiling example)"
cargo build --release --quiet
cargo build --release --quiet --example ceiling
bin=$root/target/release/image-rebase
ceiling=$root/target/release/examples/ceiling

work=$(mktemp -d "${TMPDIR:-/tmp}/image-rebase-bench.XXXXXX")
cleanup() {
	stop_registry
	if ((keep)); then say "work directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- the registry -----------------------------------------------------------------------
# log_stats FROM TO: the requests the registry logged between two log offsets (marker
# requests left out): "total GET HEAD POST PUT other mounts non2xx connections".
log_stats() {
	head -c "$2" "$REGISTRY_LOG" | tail -c +"$(($1 + 1))" | awk '
		function field(name,    v) {
			if (!match($0, " " name "=(\"[^\"]*\"|[^ ]*)")) return ""
			v = substr($0, RSTART + length(name) + 2, RLENGTH - length(name) - 2)
			gsub(/^"|"$/, "", v)
			return v
		}
		/msg="response completed/ {
			uri = field("http.request.uri")
			if (uri ~ /^\/v2\/\?mark=/) next
			m = field("http.request.method")
			total++
			n[m]++
			if (m == "POST" && uri ~ /[?&]mount=/) mounts++
			if (field("http.response.status") !~ /^2/) bad++
			conn[field("http.request.remoteaddr")] = 1
		}
		END {
			c = 0
			for (k in conn) c++
			other = total - n["GET"] - n["HEAD"] - n["POST"] - n["PUT"]
			printf "%d %d %d %d %d %d %d %d %d\n", total, n["GET"], n["HEAD"], n["POST"], n["PUT"], other, mounts, bad, c
		}'
}

# --- fixtures ---------------------------------------------------------------------------
layers=$work/layers
mkdir -p "$layers" "$work/src/v1/etc" "$work/src/v2/etc" "$work/src/app/app"
echo 'NAME="base v1"' >"$work/src/v1/etc/os-release"
echo 'NAME="base v2"' >"$work/src/v2/etc/os-release"
echo 'hello from the app' >"$work/src/app/app/hello.txt"
for l in v1 v2 app; do
	make_layer "$layers/$l.tar" "$work/src/$l"
	gzip -n -c "$layers/$l.tar" >"$layers/$l.tar.gz"
done

# seed NAME N: pushes N fresh images (tags NAME-0 .. NAME-<N-1>) and writes their list
# to $wd/NAME.list ($wd: the current backend's directory).
seed() {
	"$ceiling" seed --registry "$REGISTRY" --layers "$layers" --prefix "$1" --count "$2" \
		--repos "$repos" --jobs 8 >"$wd/$1.list" || die "seeding $2 images ($1) failed"
}

# Results, by "backend kind jobs count": "images seconds maxrss_kb client_cpu_s
# registry_cpu_s <log_stats fields>" of the last round (the highest max RSS of all
# rounds); and the images/s of every round.
declare -A result=() rates=()
clk_tck=$(getconf CLK_TCK)

# registry_cpu: the CPU time (user + system, seconds) the registry has used so far.
registry_cpu() {
	awk -v t="$clk_tck" '{ sub(/^.*\) /, ""); printf "%.2f\n", ($12 + $13) / t }' "/proc/$REGISTRY_PID/stat"
}

# measure BACKEND KIND JOBS NAME: runs KIND (fleet, ceiling, baseline) on $wd/NAME.list.
measure() {
	local backend=$1 kind=$2 jobs=$3 name=$4 list=$wd/$4.list n m0 m1 t0 t1 c0 c1 seconds stats
	local old=$REGISTRY/base:v1 new=$REGISTRY/base:v2 outf=$wd/$4.out errf=$wd/$4.err tf=$wd/$4.time
	local -a cmd
	# shellcheck disable=SC2016 # expanded by that shell
	local each='set -e; while IFS= read -r img; do "$1" rebase "$img" --old-base "$2" --new-base "$3" </dev/null; done'
	case $kind in
	fleet) cmd=("$bin" rebase --from-file "$list" --old-base "$old" --new-base "$new" --jobs "$jobs") ;;
	ceiling) cmd=("$ceiling" run --from-file "$list" --old-base "$old" --new-base "$new" --jobs "$jobs") ;;
	# One process per image, in sequence (GNU time counts every child).
	baseline) cmd=(bash -c "$each" baseline "$bin" "$old" "$new") ;;
	esac
	n=$(wc -l <"$list")
	m0=$(registry_log_mark)
	c0=$(registry_cpu)
	t0=$EPOCHREALTIME
	/usr/bin/time -f '%M %U %S' -o "$tf" "${cmd[@]}" <"$list" >"$outf" 2>"$errf" ||
		{ tail -5 "$errf" >&2 && die "$backend: $kind run $name failed"; }
	t1=$EPOCHREALTIME
	c1=$(registry_cpu)
	m1=$(registry_log_mark)
	case $kind in
	fleet)
		local rebased
		rebased=$(grep -c '"outcome":"rebased"' "$outf" || true)
		[[ $rebased == "$n" ]] || die "$backend: fleet run $name rebased $rebased of $n images"
		;;
	baseline)
		[[ $(grep -c '@sha256:' "$outf" || true) == "$n" ]] || die "$backend: baseline $name: not every image was rebased"
		;;
	esac
	local rss u sy key="$backend $kind $jobs $n" prev_rss
	read -r rss u sy < <(tail -1 "$tf")
	seconds=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
	stats=$(log_stats "$m0" "$m1")
	prev_rss=$(awk '{print $3}' <<<"${result[$key]:-0 0 0}")
	if ((prev_rss > rss)); then rss=$prev_rss; fi
	result[$key]="$n $seconds $rss $(awk -v u="$u" -v s="$sy" 'BEGIN { print u + s }') $(awk -v a="$c0" -v b="$c1" 'BEGIN { print b - a }') $stats"
	rates[$key]="${rates[$key]:-} $(awk -v n="$n" -v s="$seconds" 'BEGIN { printf "%.2f", n / s }')"
	say "$(printf '%-10s %-8s --jobs %-2s %5d images %8.2f s %7.1f images/s' "$backend" "$kind" "$jobs" "$n" "$seconds" \
		"$(awk -v n="$n" -v s="$seconds" 'BEGIN { print n / s }')")"
}

for backend in $backends; do
	wd=$work/$backend
	mkdir -p "$wd"
	start_registry "$wd/registry" "$backend"
	say "$backend: registry $REGISTRY (pid $REGISTRY_PID)"
	"$ceiling" bases --registry "$REGISTRY" --layers "$layers" --repos "$repos" ||
		die "pushing the bases failed"
	# Warm-up, not reported: the registry's first requests, the page cache.
	seed warm 100
	"$bin" rebase --from-file "$wd/warm.list" --old-base "$REGISTRY/base:v1" \
		--new-base "$REGISTRY/base:v2" --jobs 4 >/dev/null || die "$backend: warm-up failed"
	# Fleet and ceiling take turns at going first (a drift in the machine's speed, or the
	# registry catching up after seeding, does not always favour the same one).
	turn=0
	for round in $(seq "$rounds"); do
		for j in $jobs_list; do
			kinds=(fleet ceiling)
			if ((turn++ % 2)); then kinds=(ceiling fleet); fi
			for kind in "${kinds[@]}"; do
				seed "$kind$j-r$round" "$count"
				measure "$backend" "$kind" "$j" "$kind$j-r$round"
			done
		done
	done
	if ((baseline > 0)); then
		seed base "$baseline"
		measure "$backend" baseline 1 base
	fi
	if [[ " $big_backends " == *" $backend "* ]]; then
		seed big "$big"
		measure "$backend" fleet "$mem_jobs" big
	fi
	stop_registry
done

# --- the report ---------------------------------------------------------------------------
# Fields of a result: 1 images, 2 seconds, 3 max RSS KB, 4 client CPU s, 5 registry CPU s,
# 6 requests, 7 GET, 8 HEAD, 9 POST, 10 PUT, 11 other, 12 mounts, 13 non-2xx, 14 connections.
# field KEY I: the I-th field of a result.
field() {
	local -a f
	read -r -a f <<<"${result[$1]:-}"
	echo "${f[$(($2 - 1))]:-0}"
}
calc() { awk "BEGIN { $1 }"; }
# per KEY I [SCALE]: field I per image (times SCALE), 3 decimals.
per() { calc "printf \"%.3f\", ${3:-1} * $(field "$1" "$2") / $(field "$1" 1)"; }
# rate KEY: images/s, the median of the rounds.
rate() {
	# shellcheck disable=SC2086 # one rate a word
	printf '%s\n' ${rates[$1]:-0} | sort -g | awk '{ a[NR] = $1 } END { printf "%.1f", (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }'
}
pct() { calc "printf \"%.0f\", ($2 > 0 ? 100 * $1 / $2 : 0)"; }
# The minimum requests of a fleet run of N images: 5 per image (GET manifest, GET config,
# POST + PUT config, PUT manifest) and, per run, 1 ping, 2 base manifests, 2 base configs
# and one mount per repository.
min_total() { echo $((5 * $1 + 5 + ($1 < repos ? $1 : repos))); }
# req_row LABEL KEY MINIMUM: a line of the requests table.
req_row() {
	local k=$2 i
	printf '  %-30s %6.3f' "$1" "$(per "$k" 6)"
	for i in 7 8 9 10 11; do printf ' %5.3f' "$(per "$k" "$i")"; done
	printf ' %6d %7d %8s\n' "$(field "$k" 12)" "$(field "$k" 13)" "$3"
}

first_jobs=$(awk '{print $1}' <<<"$jobs_list")
report=$work/report.txt
{
	printf 'image-rebase fleet benchmark, %s, %s CPUs, %s\n' "$(date -u +%Y-%m-%dT%H:%MZ)" "$(nproc)" \
		"$(/usr/bin/docker-registry --version 2>/dev/null | awk '{print "registry " $NF}')"
	printf 'commit %s%s; %d images per run in %d repositories (each: base v1 layer + app layer + own config)\n' \
		"$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
		"$(git diff --quiet HEAD -- src Cargo.toml 2>/dev/null || echo ' (modified)')" "$count" "$repos"
	echo 're-seeding: every run rebases its own set of freshly pushed images (tags <run>-<i>, a config'
	echo 'unique to the image and run), written back to the same tag: the same work per image in every run.'
	printf 'img/s: images / wall clock of the whole process%s. CPU: user+system ms per image, of\n' \
		"$( ((rounds == 1)) || echo ", median of $rounds rounds")"
	echo 'the client process and of the registry. conns: distinct client TCP connections the registry saw.'
	for backend in $backends; do
		printf '\n== %s\n' "$backend"
		printf '%-4s %7s %7s %6s | %-15s | %-15s | %-11s | %s\n' '' 'fleet' 'ceiling' '' \
			'client CPU ms/i' 'registry CPU ms/i' 'conns' 'fleet'
		printf '%-4s %7s %7s %6s | %7s %7s | %7s %7s   | %5s %5s | %s\n' jobs 'img/s' 'img/s' 'ratio' \
			fleet ceiling fleet ceiling fleet ceil 'RSS MB'
		for j in $jobs_list; do
			fk="$backend fleet $j $count" ck="$backend ceiling $j $count"
			printf '%-4s %7s %7s %5s%% | %7.2f %7.2f | %7.2f %7.2f   | %5d %5d | %.1f\n' "$j" "$(rate "$fk")" "$(rate "$ck")" \
				"$(pct "$(rate "$fk")" "$(rate "$ck")")" "$(per "$fk" 4 1000)" "$(per "$ck" 4 1000)" \
				"$(per "$fk" 5 1000)" "$(per "$ck" 5 1000)" "$(field "$fk" 14)" "$(field "$ck" 14)" \
				"$(calc "print $(field "$fk" 3) / 1024")"
		done
		if ((rounds > 1)); then
			for j in $jobs_list; do
				printf '  all rounds, --jobs %-3s fleet:%s  ceiling:%s\n' "$j" "${rates[$backend fleet $j $count]}" \
					"${rates[$backend ceiling $j $count]}"
			done
		fi
		bk="$backend baseline 1 $baseline"
		if [[ -n ${result[$bk]:-} ]]; then
			best=0 bestj=""
			for j in $jobs_list; do
				r=$(rate "$backend fleet $j $count")
				if calc "exit !($r > $best)"; then best=$r bestj=$j; fi
			done
			br=$(rate "$bk")
			printf 'baseline, one process per image (%d images): %s img/s, client CPU %.2f ms/i, registry CPU %.2f ms/i\n' \
				"$baseline" "$br" "$(per "$bk" 4 1000)" "$(per "$bk" 5 1000)"
			printf 'fleet/baseline: %sx at --jobs %s, %sx at --jobs %s (best)\n' \
				"$(calc "printf \"%.1f\", $(rate "$backend fleet $first_jobs $count") / $br")" "$first_jobs" \
				"$(calc "printf \"%.1f\", $best / $br")" "$bestj"
		fi
		printf '\nrequests per image (registry log) total   GET  HEAD  POST   PUT other mounts non-2xx  minimum\n'
		min=$(calc "printf \"%.3f\", $(min_total "$count") / $count")
		for j in $jobs_list; do
			req_row "fleet --jobs $j" "$backend fleet $j $count" "$min"
			req_row "ceiling --jobs $j" "$backend ceiling $j $count" "-"
		done
		[[ -z ${result[$bk]:-} ]] || req_row "baseline (process per image)" "$bk" "-"
		gk="$backend fleet $mem_jobs $big"
		[[ -z ${result[$gk]:-} ]] ||
			req_row "fleet --jobs $mem_jobs, $big images" "$gk" "$(calc "printf \"%.3f\", $(min_total "$big") / $big")"
		echo 'minimum (fleet): 5 per image (GET manifest, GET config, POST+PUT config, PUT manifest) + 9 per run'
		echo '(ping, 2 base manifests, 2 base configs, 1 mount per repository); the ceiling skips the ping and'
		echo 'the old base config (7 per run).'
		mk="$backend fleet $mem_jobs $count"
		printf '\npeak memory (max RSS) of the fleet run at --jobs %d: %.1f MB at %d images' "$mem_jobs" \
			"$(calc "print $(field "$mk" 3) / 1024")" "$count"
		if [[ -n ${result[$gk]:-} ]]; then
			printf ', %.1f MB at %d images (%s img/s)\n' "$(calc "print $(field "$gk" 3) / 1024")" "$big" "$(rate "$gk")"
		else
			printf ' (no %d-image run on this backend)\n' "$big"
		fi
	done
	printf '\nfleet/ceiling (target >= 80%%):'
	worst=1000
	for backend in $backends; do
		for j in $jobs_list; do
			p=$(pct "$(rate "$backend fleet $j $count")" "$(rate "$backend ceiling $j $count")")
			printf ' %s/j%s %s%%' "$backend" "$j" "$p"
			if ((p < worst)); then worst=$p; fi
		done
	done
	if ((worst >= 80)); then echo '  -> met'; else echo "  -> NOT met (lowest $worst%)"; fi
} >"$report"

mkdir -p "$(dirname "$out")"
cp "$report" "$out"
echo
cat "$report"
say "report written to $out"
