#!/usr/bin/env bash
# Builds Courier's container image with podman (`make image`); installs Debian's podman
# package when it is missing.
#
#   IMAGE       the tag, default localhost/courier:<workspace version>
#   IMAGE_FROM  source: the multi-stage Containerfile (pulls rust:*-slim-bookworm and
#                       distroless/cc-debian12, builds the binary in the first stage)
#               binary: deploy/image/Containerfile.binary, FROM scratch, with the release binary
#                       built here (cargo build --release -p courier, or COURIER_BIN) and the
#                       shared libraries ldd lists for it; needs no base image
#               auto (default): source when both base images are present or can be pulled,
#                       binary otherwise (a machine without access to a container registry)
#   COURIER_BIN the binary to pack with IMAGE_FROM=binary (default: target/release/courier,
#               built first)
#
# After building, it checks the image: user 65532, the entrypoint, and (binary) that its
# root filesystem runs `courier --version` as user 65532 under chroot, i.e. that no shared
# library is missing. It does not `podman run` the image.
set -euo pipefail

cd "$(dirname "$0")/.."

VERSION=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)
IMAGE=${IMAGE:-localhost/courier:$VERSION}
IMAGE_FROM=${IMAGE_FROM:-auto}
CARGO=${CARGO:-cargo}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
BUILD_BASE=docker.io/library/rust:1.95-slim-bookworm
RUNTIME_BASE=gcr.io/distroless/cc-debian12:nonroot

log() { echo "build-image: $*"; }
die() {
    echo "build-image: $*" >&2
    exit 1
}

if ! command -v podman >/dev/null 2>&1; then
    log "podman missing, installing the Debian package"
    if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi
    "${sudo[@]}" apt-get update
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y podman
fi
log "$(podman --version)"

have_image() { podman image exists "$1" || podman pull -q "$1" >/dev/null 2>&1; }

case "$IMAGE_FROM" in
    auto)
        if have_image "$BUILD_BASE" && have_image "$RUNTIME_BASE"; then
            IMAGE_FROM=source
        else
            log "cannot pull $BUILD_BASE and $RUNTIME_BASE here: packing the binary built on" \
                "this machine into a FROM scratch image (IMAGE_FROM=binary)"
            IMAGE_FROM=binary
        fi
        ;;
    source | binary) ;;
    *) die "IMAGE_FROM must be auto, source or binary, not '$IMAGE_FROM'" ;;
esac

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# --- the root filesystem of the FROM scratch image -------------------------------------------
# rootfs DIR BINARY: the binary, every shared library ldd resolves for it (at the same path,
# so the loader finds them as it does here), CA certificates for TLS to S3 and Redis, a passwd
# and group naming user 65532 (home /tmp), an nsswitch.conf, and a world-writable /tmp.
rootfs() {
    local dir=$1 bin=$2 lib
    install -D -m 0755 "$bin" "$dir/usr/local/bin/courier"
    while read -r lib; do
        [ -n "$lib" ] || continue
        install -D -m 0755 "$(readlink -f "$lib")" "$dir$lib"
    done < <(ldd "$bin" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }' | sort -u)
    local ca=/etc/ssl/certs/ca-certificates.crt
    [ -s "$ca" ] || die "$ca missing (Debian package ca-certificates)"
    install -D -m 0644 "$ca" "$dir$ca"
    mkdir -p "$dir/etc" "$dir/tmp"
    chmod 1777 "$dir/tmp"
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/tmp:/sbin/nologin\n' >"$dir/etc/passwd"
    printf 'root:x:0:\nnonroot:x:65532:\n' >"$dir/etc/group"
    printf 'hosts: files dns\n' >"$dir/etc/nsswitch.conf"
}

if [ "$IMAGE_FROM" = source ]; then
    log "podman build -f Containerfile -t $IMAGE ."
    podman build -f Containerfile -t "$IMAGE" .
else
    bin=${COURIER_BIN:-}
    if [ -z "$bin" ]; then
        log "$CARGO build --release --locked -p courier"
        "$CARGO" build --release --locked -p courier
        bin=$TARGET_DIR/release/courier
    fi
    [ -x "$bin" ] || die "$bin is not an executable"
    mkdir -p "$WORK/context"
    cp deploy/image/Containerfile.binary "$WORK/context/Containerfile"
    rootfs "$WORK/context/rootfs" "$bin"
    log "root filesystem: $(cd "$WORK/context/rootfs" && find . -type f | sort | tr '\n' ' ')"
    log "podman build -f deploy/image/Containerfile.binary -t $IMAGE (context: $bin and its libraries)"
    podman build -f "$WORK/context/Containerfile" -t "$IMAGE" "$WORK/context"
fi

# --- check what was built ---------------------------------------------------------------------
user=$(podman image inspect --format '{{.Config.User}}' "$IMAGE")
entrypoint=$(podman image inspect --format '{{json .Config.Entrypoint}}' "$IMAGE")
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
[ "$user" = "65532:65532" ] || die "$IMAGE runs as '$user', not 65532:65532"
[ "$entrypoint" = '["/usr/local/bin/courier"]' ] || die "$IMAGE's entrypoint is $entrypoint"

# The image's files, exported without running it, must run the binary as user 65532.
mkdir -p "$WORK/export"
podman save -q --format docker-archive -o "$WORK/image.tar" "$IMAGE" >/dev/null
tar -xf "$WORK/image.tar" -C "$WORK/export"
mkdir -p "$WORK/root"
for layer in $(jq -r '.[0].Layers[]' "$WORK/export/manifest.json"); do
    tar -xf "$WORK/export/$layer" -C "$WORK/root"
done
if command -v chroot >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
    version=$(chroot --userspec=65532:65532 "$WORK/root" /usr/local/bin/courier --version) ||
        die "the image's root filesystem cannot run /usr/local/bin/courier (a library missing?)"
    log "chroot into the image's files as 65532: $version"
else
    log "not root: skipped running the binary from the image's files under chroot"
fi
log "built $IMAGE ($IMAGE_FROM, $((size / 1024 / 1024)) MiB, user $user, entrypoint $entrypoint)"
