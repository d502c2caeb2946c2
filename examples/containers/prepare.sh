#!/usr/bin/env bash
# Prepare a Docker engine and the images Gatekeeper's containers sandbox needs, on a machine
# that can install Debian packages but cannot pull images from any registry.
#
#   examples/containers/prepare.sh            # engine + gatekeeper/postgres:15 + gatekeeper/python:3.11
#   examples/containers/prepare.sh --check    # only say what is missing; exit 1 if anything is
#
# What it does, skipping every step that is already done (a second run takes about a second):
#   1. installs docker.io and debootstrap from the distribution (one `apt-get update` first);
#   2. starts dockerd in the background if no engine answers, with GATEKEEPER_DOCKERD_FLAGS
#      (default `--iptables=false --bridge=none`: machines without bridge networking, where
#      containers use the host's network), and waits for its socket;
#   3. builds gatekeeper/postgres:15 with debootstrap (the distribution's postgresql-15 and an
#      entrypoint that honours the official image's POSTGRES_* variables and PGPORT);
#   4. builds gatekeeper/python:3.11 with debootstrap (python3, a virtualenv on PATH) holding,
#      in /wheels, the wheels of both example APIs' requirements (sessions-api, items-api)
#      downloaded on this host (pip in a container does not see the host's package settings).
# Where images can be pulled (GitHub-hosted runners), none of this is needed for a policy that
# names registry images; the demo's Dockerfile still wants gatekeeper/python:3.11.
#
# Environment: GATEKEEPER_DEBIAN_MIRROR (default: the first URI in apt's sources, else
# http://deb.debian.org/debian), GATEKEEPER_DOCKERD_FLAGS, GATEKEEPER_DOCKERD_LOG
# (/var/log/gatekeeper-dockerd.log), PYTHON (the interpreter whose pip downloads the wheels).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SUITE=bookworm
PG_MAJOR=15
POSTGRES_IMAGE="gatekeeper/postgres:${PG_MAJOR}"
PYTHON_IMAGE="gatekeeper/python:3.11"
# Every example API whose Dockerfile installs from /wheels: each image build has nothing else.
REQUIREMENTS=("$HERE/../sessions-api/requirements.txt" "$HERE/../items-api/requirements.txt")
DOCKERD_FLAGS="${GATEKEEPER_DOCKERD_FLAGS:---iptables=false --bridge=none}"
DOCKERD_LOG="${GATEKEEPER_DOCKERD_LOG:-/var/log/gatekeeper-dockerd.log}"
CACHE_DIR="${GATEKEEPER_CACHE_DIR:-/var/cache/gatekeeper}"
CHECK_ONLY=0
[ "${1:-}" = "--check" ] && CHECK_ONLY=1

START=$(date +%s.%N)
say() { printf 'prepare: %s\n' "$*" >&2; }
elapsed() { awk -v s="$1" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }'; }
die() { say "error: $*"; exit 2; }

engine_answers() { docker info >/dev/null 2>&1; }

# Each image carries the hash of what it is built from (label gatekeeper.recipe): an image
# built by an older recipe is rebuilt, an up-to-date one is kept.
RECIPE_VERSION=1
recipe() { cat "$@" | { echo "$RECIPE_VERSION $SUITE $PG_MAJOR"; cat; } | sha256sum | cut -c1-16; }
POSTGRES_RECIPE=$(recipe "$HERE/postgres/docker-entrypoint.sh")
PYTHON_RECIPE=$(recipe "${REQUIREMENTS[@]}")
has_image() {
    [ "$(docker image inspect --format '{{index .Config.Labels "gatekeeper.recipe"}}' "$1" \
        2>/dev/null)" = "$2" ]
}

# Root filesystems being built; removed however the script ends.
ROOTS=()
cleanup() { [ "${#ROOTS[@]}" -eq 0 ] || rm -rf "${ROOTS[@]}"; }
trap cleanup EXIT

APT_UPDATED=0
apt_install() {
    [ "$(id -u)" = 0 ] || die "installing $* needs root (apt-get install -y $*)"
    command -v apt-get >/dev/null || die "no apt-get here: install $* by other means"
    if [ "$APT_UPDATED" = 0 ]; then
        apt-get update -qq
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if [ "$CHECK_ONLY" = 1 ]; then
    missing=0
    command -v docker >/dev/null || { say "missing: the docker command"; missing=1; }
    if engine_answers; then
        for image in "$POSTGRES_IMAGE" "$PYTHON_IMAGE"; do
            docker image inspect "$image" >/dev/null 2>&1 || {
                say "missing: image $image"
                missing=1
            }
        done
    else
        say "missing: a running Docker engine"
        missing=1
    fi
    exit "$missing"
fi

# --- 1. packages --------------------------------------------------------------------------
step=$(date +%s.%N)
packages=()
command -v dockerd >/dev/null || packages+=(docker.io)
command -v debootstrap >/dev/null || packages+=(debootstrap)
if [ "${#packages[@]}" -gt 0 ]; then
    say "installing ${packages[*]}"
    apt_install "${packages[@]}"
    say "installed ${packages[*]} in $(elapsed "$step") s"
fi

# --- 2. the engine ------------------------------------------------------------------------
if ! engine_answers; then
    [ "$(id -u)" = 0 ] || die "no Docker engine answers and starting one needs root"
    step=$(date +%s.%N)
    say "starting dockerd $DOCKERD_FLAGS (log: $DOCKERD_LOG)"
    mkdir -p "$(dirname "$DOCKERD_LOG")"
    # setsid: the daemon must outlive this script and the shell or CI step that ran it.
    # shellcheck disable=SC2086
    setsid nohup dockerd $DOCKERD_FLAGS >>"$DOCKERD_LOG" 2>&1 </dev/null &
    for _ in $(seq 1 120); do
        engine_answers && break
        sleep 0.5
    done
    engine_answers || die "dockerd did not answer within 60 s; its log: $DOCKERD_LOG
$(tail -n 20 "$DOCKERD_LOG" 2>/dev/null)"
    say "engine up in $(elapsed "$step") s"
fi

# --- 3 and 4. images ----------------------------------------------------------------------
mirror() {
    if [ -n "${GATEKEEPER_DEBIAN_MIRROR:-}" ]; then
        echo "$GATEKEEPER_DEBIAN_MIRROR"
        return
    fi
    local uri
    uri=$(grep -hE '^(URIs:|deb )' /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list \
        2>/dev/null | grep -v security | head -n 1 | awk '{ print $2 }')
    echo "${uri:-http://deb.debian.org/debian}"
}

# debootstrap SUITE with the given extra packages into a fresh directory, named in $ROOT.
bootstrap() {
    local root include="$1"
    root=$(mktemp -d /var/tmp/gatekeeper-rootfs.XXXXXX)
    ROOTS+=("$root" "$root.log")
    ROOT="$root"
    mkdir -p "$CACHE_DIR/debs"
    # The package cache is shared between images and runs: the second image and any rebuild
    # download only what is new.
    if ! debootstrap --variant=minbase --include="$include" --cache-dir="$CACHE_DIR/debs" \
        "$SUITE" "$root" "$(mirror)" >"$root.log" 2>&1; then
        tail -n 30 "$root.log" >&2
        die "debootstrap of $include failed"
    fi
    rm -f "$root.log"
}

# Drop what no container needs: package caches and lists, docs, man pages, locales.
slim() {
    local root="$1"
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
        "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/*
    find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'C.*' -exec rm -rf {} + \
        2>/dev/null || true
}

import_image() {
    local root="$1" name="$2" recipe="$3"
    shift 3
    local changes=(-c "LABEL gatekeeper.recipe=$recipe")
    for change in "$@"; do changes+=(-c "$change"); done
    local previous
    previous=$(docker image inspect --format '{{.Id}}' "$name" 2>/dev/null || true)
    tar --numeric-owner -C "$root" -c . | docker import "${changes[@]}" - "$name" >/dev/null
    rm -rf "$root"
    # The image an older recipe built is untagged now; remove it unless a container uses it.
    [ -z "$previous" ] || docker image rm "$previous" >/dev/null 2>&1 || true
}

build_postgres() {
    local step root
    step=$(date +%s.%N)
    say "building $POSTGRES_IMAGE with debootstrap (postgresql-$PG_MAJOR)"
    bootstrap "postgresql-$PG_MAJOR"
    root="$ROOT"
    # Debian's package creates a cluster of its own; the entrypoint makes the one it needs.
    rm -rf "$root/var/lib/postgresql/$PG_MAJOR" "$root/etc/postgresql/$PG_MAJOR"
    install -m 0755 "$HERE/postgres/docker-entrypoint.sh" "$root/usr/local/bin/docker-entrypoint.sh"
    mkdir -p "$root/docker-entrypoint-initdb.d"
    slim "$root"
    import_image "$root" "$POSTGRES_IMAGE" "$POSTGRES_RECIPE" \
        "ENV PATH=/usr/lib/postgresql/$PG_MAJOR/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
        "ENV PGDATA=/var/lib/postgresql/data" \
        "ENV LANG=C.UTF-8" \
        "EXPOSE 5432" \
        'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
        'CMD ["postgres"]'
    say "built $POSTGRES_IMAGE in $(elapsed "$step") s"
}

python_for_pip() {
    if [ -n "${PYTHON:-}" ]; then
        echo "$PYTHON"
    elif [ -x "$HERE/../../.venv/bin/python" ]; then
        echo "$HERE/../../.venv/bin/python"
    else
        echo python3
    fi
}

build_python() {
    local step root python
    step=$(date +%s.%N)
    say "building $PYTHON_IMAGE with debootstrap (python3, python3-venv)"
    bootstrap "python3,python3-venv,ca-certificates"
    root="$ROOT"
    chroot "$root" python3 -m venv /opt/venv >/dev/null
    # The host's pip sees this machine's package settings; a container's pip does not. So the
    # wheels come from here, for the image's interpreter (the same minor version as the host's
    # is checked, since wheels with compiled parts are built per version).
    python=$(python_for_pip)
    local host_version image_version
    host_version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    image_version=$(chroot "$root" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    mkdir -p "$root/wheels"
    local platform=()
    if [ "$host_version" != "$image_version" ]; then
        platform=(--python-version "$image_version" --platform manylinux2014_x86_64
            --only-binary=:all:)
    fi
    local wanted=() requirements
    for requirements in "${REQUIREMENTS[@]}"; do wanted+=(-r "$requirements"); done
    cat "${REQUIREMENTS[@]}" >"$root/tmp/requirements.txt"
    "$python" -m pip download -q -d "$root/wheels" "${platform[@]}" "${wanted[@]}" \
        2>"$root.log" || { cat "$root.log" >&2; die "pip download ${wanted[*]} failed"; }
    # Installing them once, into a throw-away virtualenv, proves the set is complete before a
    # Dockerfile relies on it; the image's own /opt/venv stays as clean as a registry image's.
    chroot "$root" sh -c 'python3 -m venv /tmp/check && /tmp/check/bin/pip install -q \
        --no-index --find-links /wheels -r /tmp/requirements.txt' >"$root.log" 2>&1 ||
        { cat "$root.log" >&2; die "the wheels in /wheels do not satisfy ${REQUIREMENTS[*]}"; }
    rm -rf "$root/tmp/check" "$root/tmp/requirements.txt"
    slim "$root"
    import_image "$root" "$PYTHON_IMAGE" "$PYTHON_RECIPE" \
        "ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
        "ENV LANG=C.UTF-8" \
        "ENV PIP_FIND_LINKS=/wheels" \
        "ENV PYTHONDONTWRITEBYTECODE=1" \
        "ENV PYTHONUNBUFFERED=1" \
        'CMD ["python3"]'
    say "built $PYTHON_IMAGE in $(elapsed "$step") s"
}

if ! has_image "$POSTGRES_IMAGE" "$POSTGRES_RECIPE" || ! has_image "$PYTHON_IMAGE" "$PYTHON_RECIPE"
then
    [ "$(id -u)" = 0 ] || die "building images with debootstrap needs root"
fi
# The two images build side by side (each with its own package cache: two debootstraps must
# not write one file at once); together they take about as long as the slower one.
builds=()
if ! has_image "$POSTGRES_IMAGE" "$POSTGRES_RECIPE"; then
    (trap cleanup EXIT; ROOTS=(); CACHE_DIR="$CACHE_DIR/postgres" build_postgres) &
    builds+=($!)
fi
if ! has_image "$PYTHON_IMAGE" "$PYTHON_RECIPE"; then
    (trap cleanup EXIT; ROOTS=(); CACHE_DIR="$CACHE_DIR/python" build_python) &
    builds+=($!)
fi
failed=0
for pid in "${builds[@]}"; do wait "$pid" || failed=1; done
[ "$failed" = 0 ] || die "an image did not build (see above)"

say "ready: $(docker version --format 'engine {{.Server.Version}}'), images $POSTGRES_IMAGE and" \
    "$PYTHON_IMAGE, in $(elapsed "$START") s"
