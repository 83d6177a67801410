#!/usr/bin/env bash
# Round-trip benchmark (issue 13): how many round trips a rebase waits for, measured
# through examples/latency_proxy.rs (a loopback TCP proxy that delays each direction by
# RTT/2 and charges one RTT per new connection) in front of a local registry, once with
# plain HTTP and once with TLS (a test CA made with openssl; TLS passes through the proxy,
# so its handshakes pay real round trips).
#
# Usage:
#   scripts/bench-latency.sh [--quick] [--rtts "0 20 50 100"] [--runs N]
#                            [--fleet-count N] [--fleet-jobs "1 8 32"] [--fleet-rtt MS]
#                            [--no-fleet] [--out FILE] [--keep]
#
#   --quick         a smoke test: RTTs 0 and 50, 1 run, a fleet of 40 at --jobs 1 and 8
#   --rtts LIST     added round-trip times in ms (default "0 20 50 100")
#   --runs N        runs per measurement; the report gives the median wall time (default 3)
#   --fleet-count N images in the fleet runs (default 200)
#   --fleet-jobs L  --jobs of the fleet and ceiling runs (default "1 8 32")
#   --fleet-rtt MS  RTT of the fleet runs (default 50)
#   --no-fleet      skip the fleet runs
#   --out FILE      where the report goes (default target/bench-latency-report.txt)
#   --keep          keep the work directory (logs of the proxy and the registries)
#
# Measured at each RTT, on each scheme: wall time of one rebase (explicit bases; an image
# with OCI base annotations, given --new-base; the same with no base given; the plumbing
# pipeline), that time divided by the RTT (the effective number of sequential round
# trips), requests per rebase (the registry's own log) and connections per rebase (the
# proxy's log). Every rebase pushes a freshly seeded image in a repository of its own, so
# every run does the same work (the new base's layer is mounted each time). Then a fleet
# of distinct images at --fleet-rtt against examples/ceiling.rs through the same proxy.
# Every process it starts is stopped by its PID on exit; everything runs on 127.0.0.1.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
script_messages bench-latency


quick=0 keep=0 fleet=1 out="" rtts="" runs="" fleet_count="" fleet_jobs="" fleet_rtt=50
while (($# > 0)); do
	case $1 in
	--quick) quick=1 && shift ;;
	--rtts) rtts=${2:?--rtts needs a value} && shift 2 ;;
	--runs) runs=${2:?--runs needs a value} && shift 2 ;;
	--fleet-count) fleet_count=${2:?--fleet-count needs a value} && shift 2 ;;
	--fleet-jobs) fleet_jobs=${2:?--fleet-jobs needs a value} && shift 2 ;;
	--fleet-rtt) fleet_rtt=${2:?--fleet-rtt needs a value} && shift 2 ;;
	--no-fleet) fleet=0 && shift ;;
	--out) out=$(realpath -m -- "${2:?--out needs a value}") && shift 2 ;;
	--keep) keep=1 && shift ;;
	-h | --help) usage 0 ;;
	*) echo "bench-latency: unknown argument $1" >&2 && usage ;;
	esac
done
if ((quick)); then
	rtts=${rtts:-0 50} runs=${runs:-1} fleet_count=${fleet_count:-40} fleet_jobs=${fleet_jobs:-1 8}
else
	rtts=${rtts:-0 20 50 100} runs=${runs:-3} fleet_count=${fleet_count:-200} fleet_jobs=${fleet_jobs:-1 8 32}
fi
for n in $rtts $fleet_rtt; do
	if ! [[ $n =~ ^[0-9]+$ ]] || ((n > 1000)); then die "an RTT must be 0-1000 ms, not $n"; fi
done
for n in $runs $fleet_count $fleet_jobs; do
	if ! [[ $n =~ ^[1-9][0-9]*$ ]] || ((n > 10000)); then die "not a count: $n"; fi
done
[[ -n ${rtts// /} && -n ${fleet_jobs// /} ]] || die "--rtts and --fleet-jobs need at least one value"
max_rtt=0
for r in $rtts; do
	if ((r > max_rtt)); then max_rtt=$r; fi
done

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
out=${out:-$root/target/bench-latency-report.txt}

scripts/install-deps.sh
command -v curl >/dev/null || die "curl is needed (marks in the registry's log over TLS)"

say "building (cargo build --release, the ceiling and latency_proxy examples)"
cargo build --release --quiet
cargo build --release --quiet --example ceiling --example latency_proxy
bin=$root/target/release/image-rebase
ceiling=$root/target/release/examples/ceiling
proxy_bin=$root/target/release/examples/latency_proxy

work=$(mktemp -d "${TMPDIR:-/tmp}/image-rebase-bench-latency.XXXXXX")
PROXY_PID=""
cleanup() {
	stop_proxy
	stop_registry
	if ((keep)); then say "work directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- the proxy ------------------------------------------------------------------------
# start_proxy RTT LOG: a latency proxy in front of $REGISTRY; sets PROXY (host:port),
# PROXY_PID, PROXY_LOG. Not in $(...): the proxy must be this shell's child.
start_proxy() {
	local i
	rm -f "$work/proxy.port"
	"$proxy_bin" --upstream "$REGISTRY" --rtt-ms "$1" --port-file "$work/proxy.port" \
		--log "$2" --max-seconds 7200 >/dev/null </dev/null &
	PROXY_PID=$! PROXY_LOG=$2
	for i in $(seq 100); do
		if [[ -s $work/proxy.port ]]; then
			PROXY=127.0.0.1:$(<"$work/proxy.port")
			return 0
		fi
		kill -0 "$PROXY_PID" 2>/dev/null || break
		sleep 0.05
	done
	die "the latency proxy did not start (i=$i)"
}
stop_proxy() {
	[[ -n ${PROXY_PID:-} ]] || return 0
	kill "$PROXY_PID" 2>/dev/null || true
	wait "$PROXY_PID" 2>/dev/null || true
	PROXY_PID=""
}
# proxy_lines: lines in the proxy's log so far.
proxy_lines() { wc -l <"$PROXY_LOG"; }
# proxy_slice FROM TO: the proxy log's lines FROM+1..TO.
proxy_slice() { head -n "$2" "$PROXY_LOG" | tail -n +"$(($1 + 1))"; }
# proxy_settle: waits (up to 5 s) until every connection the proxy opened is closed, so
# that its log holds their byte counts and the next measurement starts from none.
proxy_settle() {
	local i
	for i in $(seq 100); do
		if awk '/^open / { o++ } /^(close|refused) / { c++ } END { exit !(o == c) }' "$PROXY_LOG"; then
			return 0
		fi
		sleep 0.05
	done
	say "warning: connections still open at the proxy after 5 s (i=$i)"
}

# --- the registries -------------------------------------------------------------------
tls=$work/tls
mkdir -p "$tls"
(
	cd "$tls"
	openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=bench-ca -keyout ca.key -out ca.pem 2>/dev/null
	openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key -out server.csr 2>/dev/null
	printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >ext.cnf
	openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
		-extfile ext.cnf -out server.pem 2>/dev/null
) || die "making the test CA with openssl failed"

# start_tls_registry DIR: like start_registry (scripts/lib.sh), serving TLS with the
# test CA's certificate; exports REGISTRY, REGISTRY_PID, REGISTRY_LOG the same way.
start_tls_registry() {
	local dir=$1 port attempt i pid config
	local -a scrub=()
	mkdir -p "$dir/data"
	for i in $(compgen -e); do
		[[ $i == REGISTRY_* ]] && scrub+=(-u "$i")
	done
	for attempt in 1 2 3 4 5; do
		port=$(_free_port)
		config=$(<scripts/registry.yml)
		config=${config//@STORAGE@/$(printf '  filesystem:\n    rootdirectory: %s/data' "$dir")}
		config=${config//@ADDR@/127.0.0.1:$port}
		printf '%s\n  tls:\n    certificate: %s\n    key: %s\n' "$config" "$tls/server.pem" "$tls/server.key" \
			>"$dir/config.yml"
		env "${scrub[@]}" /usr/bin/docker-registry serve "$dir/config.yml" \
			</dev/null >"$dir/registry.log" 2>&1 &
		pid=$!
		REGISTRY_PID=$pid
		for i in $(seq 100); do
			if grep -qF "listening on 127.0.0.1:$port" "$dir/registry.log" &&
				curl -fsS -o /dev/null --max-time 2 --cacert "$tls/ca.pem" "https://127.0.0.1:$port/v2/" 2>/dev/null; then
				export REGISTRY="127.0.0.1:$port" REGISTRY_PID=$pid REGISTRY_LOG="$dir/registry.log"
				return 0
			fi
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
		unset REGISTRY_PID
		grep -q 'address already in use' "$dir/registry.log" || {
			cat "$dir/registry.log" >&2
			die "the TLS registry did not start (log above)"
		}
	done
	die "no free port for the TLS registry"
}

# mark: a marker request straight to the registry (not through the proxy); prints the
# log offset after which later requests are logged (registry_log_mark, over either scheme).
mark() {
	local m=$RANDOM$RANDOM i
	curl -fsS -o /dev/null --max-time 5 "${curl_tls[@]}" "$scheme://$REGISTRY/v2/?mark=$m" ||
		die "the registry $REGISTRY does not answer"
	for i in $(seq 100); do
		if grep -qF "\"GET /v2/?mark=$m HTTP/" "$REGISTRY_LOG"; then
			registry_log_size
			return 0
		fi
		sleep 0.05
	done
	die "the registry did not log the marker request within 5 s"
}

# --- fixtures -------------------------------------------------------------------------
src=$work/src layout=$work/layout layers=$work/layers
mkdir -p "$src/v1/etc" "$src/v2/etc" "$src/app/app" "$layers"
echo 'NAME="base v1"' >"$src/v1/etc/os-release"
echo 'NAME="base v2"' >"$src/v2/etc/os-release"
echo 'hello from the app' >"$src/app/app/hello.txt"
build_image "$layout" base-v1 --env PATH=/usr/bin:/bin --label base.version=1 "$src/v1"
build_image "$layout" base-v2 --env PATH=/usr/local/bin:/usr/bin:/bin --label base.version=2 "$src/v2"
build_image "$layout" app --from base-v1 --env APP_MODE=bench "$src/app"
v1_digest=$(jq -r '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == "base-v1") | .digest' \
	"$layout/index.json")
# base.name without a host: on the image's own registry (here: through the proxy). The
# tag "stable" points to v2 when the app is rebased.
build_image "$layout" app-annotated --from base-v1 --env APP_MODE=bench \
	--annotation org.opencontainers.image.base.name=library/base:stable \
	--annotation "org.opencontainers.image.base.digest=$v1_digest" "$src/app"
# The fleet's layers (examples/ceiling.rs builds its images from these).
for l in v1 v2 app; do
	make_layer "$layers/$l.tar" "$src/$l"
	gzip -n -c "$layers/$l.tar" >"$layers/$l.tar.gz"
done

# --- measurements ---------------------------------------------------------------------
modes="explicit annotated annotated-auto pipeline"
declare -A walls=() reqs=() conns=() methods=() timeline=()

# rebase_cmd MODE REPO: runs one rebase of $PROXY/REPO:1 through the proxy; prints the
# pushed reference.
rebase_cmd() {
	local img=$PROXY/$2:1 old=$PROXY/library/base:v1 new=$PROXY/library/base:v2
	local -a g=("${ca_flags[@]}")
	case $1 in
	explicit) "$bin" "${g[@]}" rebase "$img" --old-base "$old" --new-base "$new" --tag rebased </dev/null ;;
	annotated) "$bin" "${g[@]}" rebase "$img" --new-base "$new" --tag rebased </dev/null ;;
	annotated-auto) "$bin" "${g[@]}" rebase "$img" --tag rebased </dev/null ;;
	pipeline)
		"$bin" "${g[@]}" fetch-manifest "$img" </dev/null |
			"$bin" "${g[@]}" fetch-manifest --as old-base "$old" |
			"$bin" "${g[@]}" fetch-manifest --as new-base "$new" |
			"$bin" "${g[@]}" fetch-config |
			"$bin" "${g[@]}" split-history |
			"$bin" "${g[@]}" splice |
			"$bin" "${g[@]}" put-manifest --tag rebased | jq -er .pushed.reference
		;;
	esac
}

# measure MODE RTT RUN: seeds a fresh app repository (straight to the registry), rebases
# it through the proxy, records wall time, requests and connections.
measure() {
	local mode=$1 rtt=$2 run=$3 repo="apps/$scheme-$1-$2-$3" key="$scheme $1 $2"
	local image=app m0 m1 p0 p1 t0 t1 result slice
	if [[ $mode == annotated* ]]; then image=app-annotated; fi
	push_image "$layout" "$image" "$REGISTRY/$repo:1" || die "seeding $repo failed"
	proxy_settle
	m0=$(mark)
	p0=$(proxy_lines)
	t0=$EPOCHREALTIME
	result=$(rebase_cmd "$mode" "$repo" 2>"$work/err") ||
		{ cat "$work/err" >&2 && die "$scheme: $mode rebase at RTT $rtt ms failed"; }
	t1=$EPOCHREALTIME
	[[ $result == *"$repo@sha256:"* ]] || die "$scheme: $mode at RTT $rtt ms printed $result"
	proxy_settle
	p1=$(proxy_lines)
	m1=$(mark)
	walls[$key]="${walls[$key]:-} $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')"
	reqs[$key]="${reqs[$key]:-} $(registry_requests "$m0" "$m1" | wc -l)"
	slice=$(proxy_slice "$p0" "$p1")
	conns[$key]="${conns[$key]:-} $(grep -c '^open ' <<<"$slice" || true)"
	methods[$key]=$(registry_requests "$m0" "$m1" | awk '{ n[$1]++ }
		END { split("GET HEAD POST PATCH PUT DELETE", o, " "); for (i = 1; i <= 6; i++) if (o[i] in n) s = s (s == "" ? "" : " ") o[i] " " n[o[i]]; print s }')
	if ((rtt > 0 && rtt == max_rtt && run == 1)); then
		timeline[$key]=$(
			printf '%s\n' "$slice" | awk -v t0="$t0" -v rtt="$rtt" '
				$1 == "open" { printf "    %5.1f  conn %-3s opened\n", ($3 - t0) * 1000 / rtt, $2 }
				$1 == "req" { line = $4; for (i = 5; i <= NF; i++) line = line " " $i
					printf "    %5.1f  conn %-3s %s\n", ($3 - t0) * 1000 / rtt, $2, line }'
			echo "    registry log, in order:"
			registry_requests "$m0" "$m1" | sed 's/^/      /'
		) || true
		# Digests to 12 digits, upload states left out: one request a short line.
		timeline[$key]=$(sed -E 's/(sha256:[0-9a-f]{12})[0-9a-f]{52}/\1/g; s/_state=[^& ]*/_state=.../' <<<"${timeline[$key]}")
	fi
}

# fleet_measure KIND JOBS: seeds fresh images, rebases them through the proxy (KIND: fleet
# or ceiling); records seconds, requests, connections.
declare -A fleet_res=()
fleet_measure() {
	local kind=$1 jobs=$2 name="$1-j$2" list m0 m1 p0 p1 t0 t1 n
	"$ceiling" seed --registry "$REGISTRY" --layers "$layers" --prefix "$name" --count "$fleet_count" \
		--repos 4 --jobs 8 | sed "s#^$REGISTRY/#$PROXY/#" >"$work/$name.list" || die "seeding $name failed"
	list=$work/$name.list
	n=$(wc -l <"$list")
	proxy_settle
	m0=$(mark)
	p0=$(proxy_lines)
	t0=$EPOCHREALTIME
	case $kind in
	fleet)
		"$bin" rebase --from-file "$list" --old-base "$PROXY/base:v1" --new-base "$PROXY/base:v2" \
			--jobs "$jobs" >"$work/$name.out" 2>"$work/err" </dev/null ||
			{ tail -5 "$work/err" >&2 && die "fleet --jobs $jobs failed"; }
		[[ $(grep -c '"outcome":"rebased"' "$work/$name.out" || true) == "$n" ]] ||
			die "fleet --jobs $jobs did not rebase all $n images"
		;;
	ceiling)
		"$ceiling" run --from-file "$list" --old-base "$PROXY/base:v1" --new-base "$PROXY/base:v2" \
			--jobs "$jobs" >"$work/$name.out" 2>"$work/err" </dev/null ||
			{ tail -5 "$work/err" >&2 && die "ceiling --jobs $jobs failed"; }
		;;
	esac
	t1=$EPOCHREALTIME
	proxy_settle
	p1=$(proxy_lines)
	m1=$(mark)
	fleet_res["$kind $jobs"]="$n $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }') \
$(registry_requests "$m0" "$m1" | wc -l) $(proxy_slice "$p0" "$p1" | grep -c '^open ' || true)"
	say "$(printf 'fleet at RTT %s ms: %-7s --jobs %-2s %4d images %7.2f s' "$fleet_rtt" "$kind" "$jobs" "$n" \
		"$(awk '{print $2}' <<<"${fleet_res["$kind $jobs"]}")")"
}

for scheme in https http; do
	if [[ $scheme == https ]]; then
		start_tls_registry "$work/registry-https"
		ca_flags=(--https --ca-cert "$tls/ca.pem") curl_tls=(--cacert "$tls/ca.pem")
	else
		start_registry "$work/registry-http"
		ca_flags=() curl_tls=()
	fi
	say "$scheme: registry $REGISTRY (pid $REGISTRY_PID)"
	push_image "$layout" base-v1 "$REGISTRY/library/base:v1"
	push_image "$layout" base-v2 "$REGISTRY/library/base:v2"
	push_image "$layout" base-v2 "$REGISTRY/library/base:stable"
	[[ $(raw_manifest "$REGISTRY/library/base:v1" | sha256sum | cut -d' ' -f1) == "${v1_digest#sha256:}" ]] ||
		die "base:v1 changed its digest on the way to the registry: the annotation would not name it"
	for rtt in $rtts; do
		start_proxy "$rtt" "$work/proxy-$scheme-$rtt.log"
		# Warm-up, not reported: the registry's first requests, the page cache.
		measure explicit "$rtt" 0
		unset "walls[$scheme explicit $rtt]" "reqs[$scheme explicit $rtt]" "conns[$scheme explicit $rtt]"
		for run in $(seq "$runs"); do
			for mode in $modes; do
				measure "$mode" "$rtt" "$run"
			done
		done
		say "$scheme, RTT $rtt ms: $(for mode in $modes; do printf '%s%s s  ' "$mode" "${walls[$scheme $mode $rtt]}"; done)"
		stop_proxy
	done
	if [[ $scheme == http ]] && ((fleet)); then
		"$ceiling" bases --registry "$REGISTRY" --layers "$layers" --repos 4 || die "pushing the fleet's bases failed"
		start_proxy "$fleet_rtt" "$work/proxy-fleet.log"
		for jobs in $fleet_jobs; do
			fleet_measure fleet "$jobs"
			fleet_measure ceiling "$jobs"
		done
		stop_proxy
	fi
	stop_registry
done

# --- the report -------------------------------------------------------------------------
calc() { awk "BEGIN { $1 }"; }
# median WORDS...: the median of numbers.
median() {
	printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print 0; else printf "%.3f", (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }'
}
# spread WORDS...: "N" when all equal, else "MIN-MAX".
spread() {
	printf '%s\n' "$@" | sort -n | awk 'NR == 1 { lo = $1 } { hi = $1 } END { print (lo == hi ? lo : lo "-" hi) }'
}
# The issue's limit (levels of requests that can go out together) and goal, in RTTs.
limit() {
	case "$1 $2" in
	"https explicit") echo 6 ;;
	"http explicit") echo 5 ;;
	"https annotated"*) echo 7 ;;
	"http annotated"*) echo 6 ;;
	*) echo - ;;
	esac
}
goal() {
	case "$1 $2" in
	"https explicit") echo "<=7" ;;
	"http explicit") echo "<=8" ;;
	*" annotated"*) echo "<=8" ;;
	*" pipeline") echo "<=2x expl." ;;
	esac
}

report=$work/report.txt
{
	printf 'image-rebase round-trip benchmark, %s, %s CPUs, %s\n' "$(date -u +%Y-%m-%dT%H:%MZ)" "$(nproc)" \
		"$(/usr/bin/docker-registry --version 2>/dev/null | awk '{print "registry " $NF}')"
	printf 'commit %s%s; RTT added by examples/latency_proxy.rs (RTT/2 each way, +1 RTT per new connection)\n' \
		"$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
		"$(git diff --quiet HEAD -- src Cargo.toml 2>/dev/null || echo ' (modified)')"
	printf 'one rebase of an image (base layer + app layer) in a fresh repository, median wall time of %s run(s);\n' "$runs"
	echo 'RTTs = wall / RTT; net = (wall - wall at RTT 0) / RTT; reqs: requests in the registry log;'
	echo 'conns: TCP connections through the proxy (the HTTPS attempt on plain HTTP included).'
	echo 'modes: explicit = rebase APP --old-base B1 --new-base B2 --tag rebased;'
	echo '       annotated = rebase APP --new-base B2 (old base from the OCI annotations);'
	echo '       annotated-auto = rebase APP (both bases from the annotations);'
	echo '       pipeline = fetch-manifest | fetch-manifest --as old-base | --as new-base | fetch-config'
	echo '                  | split-history | splice | put-manifest (7 processes).'
	for scheme in https http; do
		printf '\n== %s\n' "$([[ $scheme == https ]] && echo 'HTTPS (TLS with a test CA, passed through the proxy)' || echo 'plain HTTP')"
		printf '%-15s %6s %8s %7s %7s %6s %-11s %5s %5s  %s\n' mode 'RTT ms' 'wall s' RTTs net limit goal reqs conns 'methods'
		for mode in $modes; do
			for rtt in $rtts; do
				key="$scheme $mode $rtt"
				# shellcheck disable=SC2086 # one figure a word
				w=$(median ${walls[$key]:-})
				# shellcheck disable=SC2086
				w0=$(median ${walls[$scheme $mode 0]:-})
				if ((rtt > 0)); then
					r=$(calc "printf \"%.1f\", $w * 1000 / $rtt")
					if [[ -n ${walls[$scheme $mode 0]:-} ]]; then
						net=$(calc "printf \"%.1f\", ($w - $w0) * 1000 / $rtt")
					else
						net=-
					fi
				else
					r=- net=-
				fi
				# shellcheck disable=SC2086
				printf '%-15s %6s %8.3f %7s %7s %6s %-11s %5s %5s  %s\n' "$mode" "$rtt" "$w" "$r" "$net" \
					"$(limit "$scheme" "$mode")" "$(goal "$scheme" "$mode")" "$(spread ${reqs[$key]:-0})" \
					"$(spread ${conns[$key]:-0})" "${methods[$key]:-}"
			done
		done
	done
	if ((fleet)); then
		printf '\n== fleet of %s distinct images at RTT %s ms (plain HTTP, 4 repositories), one run each\n' "$fleet_count" "$fleet_rtt"
		printf '%-5s %8s %7s %9s %7s %7s | %-13s | %-13s | %s\n' jobs 'fleet s' 'img/s' 'ceiling s' 'img/s' ratio \
			'RTTs/img f c' 'reqs/img f c' 'conns f c'
		for jobs in $fleet_jobs; do
			read -r n fs fr fc <<<"${fleet_res[fleet $jobs]}"
			read -r _ cs cr cc <<<"${fleet_res[ceiling $jobs]}"
			printf '%-5s %8.2f %7.1f %9.2f %7.1f %6.0f%% | %6.2f %6.2f | %6.2f %6.2f | %4d %4d\n' "$jobs" "$fs" \
				"$(calc "print $n / $fs")" "$cs" "$(calc "print $n / $cs")" "$(calc "print 100 * $cs / $fs")" \
				"$(calc "print $fs * 1000 * $jobs / $fleet_rtt / $n")" "$(calc "print $cs * 1000 * $jobs / $fleet_rtt / $n")" \
				"$(calc "print $fr / $n")" "$(calc "print $cr / $n")" "$fc" "$cc"
		done
		echo 'ratio = fleet img/s / ceiling img/s (goal >= 85%); RTTs/img = wall * jobs / RTT / images.'
	fi
	printf '\n== where the round trips go, RTT %s ms, first run of each mode\n' "$max_rtt"
	echo 'time since the command started, in RTTs, when the client opened a connection or sent a request'
	echo '(on HTTPS the proxy sees TLS flights, "- N bytes": the handshake, then one a request; the'
	echo 'registry log gives their order).'
	for scheme in http https; do
		for mode in $modes; do
			key="$scheme $mode $max_rtt"
			[[ -n ${timeline[$key]:-} ]] || continue
			printf '\n  %s, %s:\n%s\n' "$scheme" "$mode" "${timeline[$key]}"
		done
	done
} >"$report"

mkdir -p "$(dirname "$out")"
cp "$report" "$out"
echo
cat "$report"
say "report written to $out"
