#!/usr/bin/env bash
# Mutation testing with cargo-mutants: changes one operator or return value at a time and
# runs the tests, to find behaviour that no test pins. Not part of CI (the pure modules
# take about 15 minutes on 2 cores). Run it before a restructuring and after changing pure
# logic; every survivor is either pinned by a new test or explained in
# scripts/mutants-allow.txt.
#
#   scripts/mutants.sh                 the pure modules, with the unit tests (cargo test --lib)
#   scripts/mutants.sh FILE...         the named files, with the whole suite (needs the
#                                      registry, skopeo and umoci: scripts/install-deps.sh)
#   scripts/mutants.sh --unit FILE...  the named files, with the unit tests only
#   scripts/mutants.sh --shard K/N ... only the K-th of N slices of the mutants (for long runs)
#   scripts/mutants.sh --re REGEX ...  only the mutants whose name matches REGEX (e.g. to
#                                      run the whole suite on a --unit run's survivors)
#
# Prints caught / missed / unviable / timeout per file, the percentage caught of the viable
# mutants, and each missed mutant, marked "explained" when scripts/mutants-allow.txt has a
# line for it. Results stay in target/mutants/<name>/mutants.out. Exit status 0 when every
# survivor is explained, 1 otherwise.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The pure modules: JSON in, JSON out, no I/O.
PURE=(src/image/*.rs src/oci/*.rs src/json.rs)

select=()
unit=false
while (($# > 0)); do
	case $1 in
	--shard)
		select+=(--shard "${2:?--shard K/N}")
		shift 2
		;;
	--re)
		select+=(--re "${2:?--re REGEX}")
		shift 2
		;;
	--unit)
		unit=true
		shift
		;;
	*) break ;;
	esac
done
if (($# == 0)); then
	files=("${PURE[@]}")
	name=pure
	unit=true
else
	files=("$@")
	name=$(basename "${1%.rs}")$( (($# > 1)) && echo "-and-$(($# - 1))-more" || true)
fi
if $unit; then
	test_args=(--lib)
else
	test_args=(--lib --bins --tests)
	scripts/install-deps.sh
fi

if ! command -v cargo-mutants >/dev/null; then
	echo "mutants: installing cargo-mutants (cargo install --locked)" >&2
	cargo install --locked cargo-mutants
fi

out=target/mutants/$name
mkdir -p "$out"
args=()
for f in "${files[@]}"; do
	[[ -f $f ]] || {
		echo "mutants: no file $f" >&2
		exit 2
	}
	args+=(--file "$f")
done
# cargo-mutants exits non-zero when a mutant survives: the summary below decides.
cargo mutants "${args[@]}" "${select[@]}" --no-shuffle --output "$out" -- "${test_args[@]}" || true

python3 - "$out/mutants.out/outcomes.json" scripts/mutants-allow.txt <<'PY'
import json, re, sys
from collections import defaultdict

outcomes = json.load(open(sys.argv[1]))["outcomes"]
allow = []
for line in open(sys.argv[2]):
    line = line.strip()
    if line and not line.startswith("#"):
        pattern, _, reason = line.partition("  # ")
        allow.append((re.compile(pattern.strip()), reason.strip()))

counts = defaultdict(lambda: defaultdict(int))
missed = []
for o in outcomes:
    scenario = o.get("scenario")
    if not isinstance(scenario, dict) or "Mutant" not in scenario:
        continue  # the baseline
    m = scenario["Mutant"]
    summary = o["summary"]
    kind = {"CaughtMutant": "caught", "MissedMutant": "missed", "Unviable": "unviable",
            "Timeout": "timeout"}.get(summary, summary.lower())
    counts[m["file"]][kind] += 1
    if kind == "missed":
        name = m.get("name") or f'{m["file"]}: {m.get("description", "")}'
        reason = next((r for p, r in allow if p.search(name)), None)
        missed.append((name, reason))

total = defaultdict(int)
print(f'{"file":<28} {"caught":>7} {"missed":>7} {"unviable":>9} {"timeout":>8} {"caught %":>9}')
for f in sorted(counts):
    c = counts[f]
    for k in ("caught", "missed", "unviable", "timeout"):
        total[k] += c[k]
    viable = c["caught"] + c["missed"] + c["timeout"]
    pct = 100 * (c["caught"] + c["timeout"]) / viable if viable else 100
    print(f'{f:<28} {c["caught"]:>7} {c["missed"]:>7} {c["unviable"]:>9} {c["timeout"]:>8} {pct:>8.1f}%')
viable = total["caught"] + total["missed"] + total["timeout"]
pct = 100 * (total["caught"] + total["timeout"]) / viable if viable else 100
print(f'{"all":<28} {total["caught"]:>7} {total["missed"]:>7} {total["unviable"]:>9} {total["timeout"]:>8} {pct:>8.1f}%')
unexplained = 0
for name, reason in missed:
    if reason:
        print(f"explained  {name}  ({reason})")
    else:
        unexplained += 1
        print(f"MISSED     {name}")
print(f"{unexplained} unexplained survivor(s)")
sys.exit(1 if unexplained else 0)
PY
