# shellcheck shell=bash
# Helpers for the tests that use real image builders: docker (BuildKit and classic),
# buildah and podman, each with its state under one directory, pushing to the test
# registry on 127.0.0.1 (plain HTTP). Source it from bash after scripts/lib.sh
# (set -euo pipefail is assumed); needs what scripts/install-deps.sh installs. No
# network: every base is built FROM scratch here.
#
#   builders_init DIR [RUNROOT]
#                            keep all builder state under DIR, podman's and buildah's
#                            run root in RUNROOT (default DIR/run; podman wants its path
#                            under 50 characters); exports BUILDERS_DIR, BUILDERS_RUNROOT
#   start_dockerd            start a private dockerd (vfs storage, no iptables, no bridge)
#                            with its data root, exec root and socket under BUILDERS_DIR;
#                            exports DOCKER_HOST and DOCKERD_PID
#   stop_dockerd             stop it by its PID and wait for it (and its containerd)
#   base_context DIR N       a build context for base vN: FROM scratch, a static busybox,
#                            /etc/os-release (VERSION_ID=N), /etc/only-vN, ENV PATH, a LABEL
#   build_push BUILDER CONTEXT REF [K=V]...
#                            build CONTEXT's Dockerfile with BUILDER (build args K=V) and push
#                            it to REF; BUILDER is one of
#                              buildkit        docker, DOCKER_BUILDKIT=1 (Docker schema 2)
#                              classic         docker, DOCKER_BUILDKIT=0 (Docker schema 2)
#                              buildah         buildah bud, no layer cache (OCI)
#                              buildah-layers  buildah bud --layers --format docker
#                              podman          podman build, its layer cache on (OCI)
#                              podman-squash   podman build --squash-all --format docker
#                            buildah and podman drop the image locally after the push, so
#                            a later FROM pulls it from the registry, as on a user's machine
#   podman_commit IMAGE REF CHANGE...
#                            create a container of IMAGE, commit it with --change CHANGE...
#                            and push the result to REF
#   podman_run IMAGE [ARG]...  run IMAGE (pulled from the registry) with runc, no network
#
# The settings are the ones that work in a container without systemd: vfs storage,
# chroot isolation, docker builds with --network=none. The docker CLI used is the one
# of the docker.io package (/usr/bin/docker), which matches its dockerd.

DOCKER=/usr/bin/docker

_builders_die() {
	echo "builders.sh: $*" >&2
	return 1
}

builders_init() {
	local dir=${1:?usage: builders_init DIR [RUNROOT]}
	mkdir -p "$dir" "${2:-$dir/run}"
	BUILDERS_DIR=$(cd "$dir" && pwd)
	BUILDERS_RUNROOT=$(cd "${2:-$dir/run}" && pwd)
	export BUILDERS_DIR BUILDERS_RUNROOT
	((${#BUILDERS_RUNROOT} < 50)) ||
		_builders_die "the run root $BUILDERS_RUNROOT is 50 characters or longer" || return 1
	mkdir -p "$BUILDERS_DIR/containers"
}

# Options for buildah and podman: their own storage, vfs, no registries.conf surprises.
_storage() {
	echo --root "$BUILDERS_DIR/containers" --runroot "$BUILDERS_RUNROOT" --storage-driver vfs
}

start_dockerd() {
	[[ -n ${BUILDERS_DIR:-} ]] || _builders_die "builders_init first" || return 1
	local d=$BUILDERS_DIR/docker i
	mkdir -p "$d"
	# Loopback registries are insecure (plain HTTP) for dockerd without any option.
	/usr/sbin/dockerd --data-root "$d/data" --exec-root "$d/exec" --pidfile "$d/dockerd.pid" \
		-H "unix://$d/docker.sock" --storage-driver vfs --iptables=false --ip6tables=false \
		--bridge=none --log-level warn </dev/null >"$d/dockerd.log" 2>&1 &
	DOCKERD_PID=$!
	export DOCKER_HOST=unix://$d/docker.sock
	# Up to 30 s for it to answer.
	for i in $(seq 300); do
		if "$DOCKER" version >/dev/null 2>&1; then
			export DOCKERD_PID
			return 0
		fi
		kill -0 "$DOCKERD_PID" 2>/dev/null || break
		sleep 0.1
	done
	cat "$d/dockerd.log" >&2
	stop_dockerd
	_builders_die "dockerd did not start (log above)"
}

stop_dockerd() {
	[[ -n ${DOCKERD_PID:-} ]] || return 0
	local i
	# SIGTERM: dockerd stops the containerd it started, then exits.
	kill "$DOCKERD_PID" 2>/dev/null || true
	for i in $(seq 200); do
		kill -0 "$DOCKERD_PID" 2>/dev/null || break
		sleep 0.1
	done
	kill -9 "$DOCKERD_PID" 2>/dev/null || true
	wait "$DOCKERD_PID" 2>/dev/null || true
	unset DOCKERD_PID DOCKER_HOST
}

base_context() {
	local dir=${1:?usage: base_context DIR N} n=${2:?usage: base_context DIR N} applet
	# With the mount points a RUN step needs already there, a RUN leaves only its own
	# files in its layer (else builders add them, with the time of the build).
	mkdir -p "$dir/rootfs/bin" "$dir/rootfs/etc" "$dir/rootfs/dev" "$dir/rootfs/proc" \
		"$dir/rootfs/sys" "$dir/rootfs/tmp" "$dir/rootfs/run"
	touch "$dir/rootfs/etc/hostname" "$dir/rootfs/etc/hosts" "$dir/rootfs/etc/resolv.conf"
	cp /bin/busybox "$dir/rootfs/bin/busybox"
	for applet in sh cat echo ls touch mkdir; do
		ln -sf busybox "$dir/rootfs/bin/$applet"
	done
	printf 'NAME=base\nVERSION_ID=%s\n' "$n" >"$dir/rootfs/etc/os-release"
	echo "only in v$n" >"$dir/rootfs/etc/only-v$n"
	cat >"$dir/Dockerfile" <<-EOF
		FROM scratch
		COPY rootfs/ /
		ENV PATH=/usr/local/bin:/bin BASE_VERSION=$n
		LABEL org.example.base.version=$n
		CMD ["/bin/sh"]
	EOF
	_pin_times "$dir"
}

# Every file of a context gets the same time, so that builds that copy it make the same
# layers (docker keeps the context's times).
_pin_times() {
	find "$1" -exec touch -h -d @0 {} +
}

build_push() {
	local usage="usage: build_push BUILDER CONTEXT REF [K=V]..."
	local builder=${1:?$usage} context=${2:?$usage} ref=${3:?$usage} kv
	local -a args=() storage
	shift 3
	for kv in "$@"; do args+=(--build-arg "$kv"); done
	read -r -a storage <<<"$(_storage)"
	_pin_times "$context"
	case $builder in
	buildkit | classic)
		local kit=1
		[[ $builder == buildkit ]] || kit=0
		DOCKER_BUILDKIT=$kit "$DOCKER" build -q --network=none "${args[@]}" -t "$ref" "$context" >/dev/null
		"$DOCKER" push -q "$ref" >/dev/null
		return 0
		;;
	buildah) buildah "${storage[@]}" bud -q --isolation chroot --tls-verify=false --format oci \
		"${args[@]}" -t "$ref" "$context" >/dev/null ;;
	buildah-layers) buildah "${storage[@]}" bud -q --isolation chroot --tls-verify=false --layers \
		--format docker "${args[@]}" -t "$ref" "$context" >/dev/null ;;
	podman) podman "${storage[@]}" build -q --isolation chroot --tls-verify=false \
		"${args[@]}" -t "$ref" "$context" >/dev/null ;;
	podman-squash) podman "${storage[@]}" build -q --isolation chroot --tls-verify=false \
		--squash-all --format docker "${args[@]}" -t "$ref" "$context" >/dev/null ;;
	*) _builders_die "build_push: unknown builder $builder; $usage" || return 1 ;;
	esac
	buildah "${storage[@]}" push -q --tls-verify=false "$ref" >/dev/null
	buildah "${storage[@]}" rmi "$ref" >/dev/null
}

podman_commit() {
	local usage="usage: podman_commit IMAGE REF CHANGE..."
	local image=${1:?$usage} ref=${2:?$usage} c change
	local -a storage changes=()
	shift 2
	for change in "$@"; do changes+=(--change "$change"); done
	read -r -a storage <<<"$(_storage)"
	c=$(podman "${storage[@]}" create --tls-verify=false --runtime runc --network none "$image")
	podman "${storage[@]}" commit -q "${changes[@]}" "$c" "$ref" >/dev/null
	podman "${storage[@]}" rm "$c" >/dev/null
	buildah "${storage[@]}" push -q --tls-verify=false "$ref" >/dev/null
	buildah "${storage[@]}" rmi -a >/dev/null
}

podman_run() {
	local image=${1:?usage: podman_run IMAGE [ARG]...}
	local -a storage
	shift
	read -r -a storage <<<"$(_storage)"
	# runc may not raise a limit above what this process has: keep them low.
	podman "${storage[@]}" run --rm --tls-verify=false --runtime runc --network none \
		--ulimit nofile=1024:1024 --ulimit nproc=1024:1024 "$image" "$@"
}

# app_context DIR LABEL [--no-layers]: a build context for an app FROM the build arg BASE,
# with LABEL FROM=LABEL as its first instruction; it copies /app/msg.txt, RUNs a step
# that writes /app/run.txt (times pinned, so a rebuild makes the same layer), sets ENV
# and a CMD that prints os-release and both files. --no-layers: only LABEL, ENV and CMD.
app_context() {
	local usage="usage: app_context DIR LABEL [--no-layers]"
	local dir=${1:?$usage} label=${2:?$usage}
	mkdir -p "$dir"
	if [[ ${3:-} == --no-layers ]]; then
		cat >"$dir/Dockerfile" <<-EOF
			ARG BASE
			FROM \$BASE
			LABEL FROM=$label
			ENV APP=none
			CMD ["/bin/sh", "-c", "cat /etc/os-release"]
		EOF
	else
		mkdir -p "$dir/rootfs/app"
		echo "hello from the app" >"$dir/rootfs/app/msg.txt"
		cat >"$dir/Dockerfile" <<-EOF
			ARG BASE
			FROM \$BASE
			LABEL FROM=$label
			COPY rootfs/ /
			RUN echo run >/app/run.txt && touch -d @0 /app/run.txt /app
			ENV APP=1
			CMD ["/bin/sh", "-c", "cat /etc/os-release /app/msg.txt /app/run.txt"]
		EOF
	fi
	_pin_times "$dir"
}

# retag SRC DST: DST names the same manifest as SRC (same bytes, same digest).
retag() {
	skopeo copy -q --preserve-digests --src-tls-verify=false --dest-tls-verify=false \
		"docker://${1:?usage: retag SRC DST}" "docker://${2:?usage: retag SRC DST}"
}
