#!/usr/bin/env bash
# Install what the tests and the demo need on a Debian 12 machine.
# Idempotent and quiet: installs only missing Debian packages (one apt-get update, only
# when something is missing) and checks that a Rust toolchain is present.
# Downloads nothing except Debian packages.
set -euo pipefail

# docker.io, buildah, podman, runc and busybox-static: the tests that build images with
# real builders (scripts/builders.sh).
packages=(docker-registry skopeo umoci apache2-utils openssl tar gzip jq groff-base python3
	docker.io buildah podman runc busybox-static)

die() {
	echo "install-deps: $*" >&2
	exit 1
}

missing=()
for pkg in "${packages[@]}"; do
	status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
	[[ $status == installed ]] || missing+=("$pkg")
done

if ((${#missing[@]} > 0)); then
	command -v apt-get >/dev/null || die "apt-get not found; install by hand: ${missing[*]}"
	sudo=()
	if [[ $(id -u) -ne 0 ]]; then
		command -v sudo >/dev/null || die "not root and no sudo; install by hand: ${missing[*]}"
		sudo=(sudo)
	fi
	echo "install-deps: installing ${missing[*]}" >&2
	log=$(mktemp)
	trap 'rm -f "$log"' EXIT
	apt_get=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -y -o Dpkg::Use-Pty=0)
	if ! { "${apt_get[@]}" update &&
		"${apt_get[@]}" install --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
		cat "$log" >&2
		die "apt-get failed (output above)"
	fi
fi

# The binaries the scripts call, whatever package provided them.
for cmd in docker-registry skopeo umoci htpasswd openssl tar gzip jq groff python3 \
	buildah podman runc; do
	command -v "$cmd" >/dev/null || die "$cmd not found on PATH after installing packages"
done
# Called by path: another docker CLI earlier on PATH may not match this dockerd.
for file in /usr/bin/docker /usr/sbin/dockerd /bin/busybox; do
	[[ -x $file ]] || die "$file not found after installing packages"
done
tar --version 2>/dev/null | grep -q 'GNU tar' || die "tar is not GNU tar (needed for --sort=name)"

if ! command -v cargo >/dev/null; then
	die "cargo not found on PATH: install a Rust toolchain (https://rustup.rs), then run
       '. \"\$HOME/.cargo/env\"' or open a new shell, and run this script again"
fi
