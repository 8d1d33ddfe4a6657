#!/usr/bin/env bash
# Build a lean, statically linked ffmpeg and ffprobe for the sampler, from Debian's own source
# package of the ffmpeg this host runs (same version, same security patches).
#
# Why: Debian's ffmpeg links about 200 shared libraries, and resolving their symbols costs about
# 0.06 CPU-s every time ffmpeg or ffprobe starts, several times the decoding of one keyframe.
# The sampler starts one ffprobe and one ffmpeg per video (two ffprobes for a long one), so on a
# busy worker that start-up is a large share of the decode bill (BENCHMARKS.md, section 1).
# This build keeps only what the sampler uses: the demuxers MotionGuard allows, the video decoders
# uploads use, the filters the sampler and ffmpeg's auto-rotation insert, file and pipe protocols
# (no network).  With --nvdec it also decodes on an NVIDIA GPU (NVDEC, `-hwaccel cuda`).
#
#   bash scripts/build-ffmpeg.sh [--nvdec] [PREFIX]      # default PREFIX .cache/ffmpeg-lean
#
# Then point the sampler at it: `scan --ffmpeg PREFIX/bin/ffmpeg --ffprobe PREFIX/bin/ffprobe`,
# or MOTIONGUARD_FFMPEG_BINARY / MOTIONGUARD_FFPROBE_BINARY for the worker.
# Needs: apt-get (the source and the build packages, installed when missing); about 5 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."

nvdec=0
if [[ "${1:-}" == "--nvdec" ]]; then
    nvdec=1
    shift
fi
PREFIX="$(realpath -m "${1:-.cache/ffmpeg-lean}")"
WORK="$(realpath -m "${FFMPEG_BUILD_DIR:-.cache/ffmpeg-build}")"
say() { echo "build-ffmpeg: $*" >&2; }

version="$(dpkg-query -W -f '${Version}' ffmpeg 2>/dev/null || true)"
if [[ -z "$version" ]]; then
    say "Debian's ffmpeg package is not installed here; this script builds its source package"
    exit 1
fi

demuxers=mov,matroska,avi,gif,apng,mpegts,mpegps,flv,asf,ogg,mxf,nut,ivf,yuv4mpegpipe,dv
decoders=h264,hevc,vp8,vp9,av1,libdav1d,mpeg4,mpeg1video,mpeg2video,mjpeg,h263,h263p,flv,vp6,vp6f,theora
decoders+=,msmpeg4v1,msmpeg4v2,msmpeg4v3,wmv1,wmv2,wmv3,vc1,prores,dvvideo,ffv1,huffyuv,rawvideo,gif,apng,png
parsers=h264,hevc,vp8,vp9,av1,mpeg4video,mpegvideo,mjpeg,h263,vc1,png,gif,dvvideo
filters=scale,format,crop,select,trim,showinfo,concat,transpose,hflip,vflip,rotate,null,copy,setsar,setpts,fps
filters+=,hwdownload,pad
options=(
    --prefix="$PREFIX" --disable-shared --enable-static --disable-debug --disable-doc
    --disable-autodetect --disable-everything --disable-network --disable-ffplay
    --enable-zlib --enable-libdav1d --enable-protocol=file,pipe
    --enable-demuxer="$demuxers" --enable-decoder="$decoders" --enable-parser="$parsers"
    --enable-filter="$filters" --enable-encoder=rawvideo,wrapped_avframe --enable-muxer=rawvideo,null
    --enable-bsf=h264_mp4toannexb,hevc_mp4toannexb,vp9_superframe_split,av1_frame_split
    --pkg-config-flags=--static --extra-version=motionguard-lean
)
if ((nvdec)); then
    options+=(--enable-ffnvcodec --enable-cuda --enable-cuvid --enable-nvdec
        --enable-hwaccel=h264_nvdec,hevc_nvdec,vp8_nvdec,vp9_nvdec,av1_nvdec,mpeg1_nvdec,mpeg2_nvdec,mpeg4_nvdec,vc1_nvdec
        --enable-decoder=h264_cuvid,hevc_cuvid,vp8_cuvid,vp9_cuvid,av1_cuvid,mpeg2_cuvid,mpeg4_cuvid,vc1_cuvid)
fi

# Nothing to do (no packages, no source) when this version was built with these options.
stamp="ffmpeg $version: ${options[*]}"
if [[ -x "$PREFIX/bin/ffmpeg" && -x "$PREFIX/bin/ffprobe" && "$(cat "$PREFIX/BUILD" 2>/dev/null)" == "$stamp" ]]; then
    say "already built for ffmpeg $version with these options: $PREFIX/bin"
    echo "$PREFIX/bin"
    exit 0
fi

packages=(gcc make libc6-dev nasm pkg-config zlib1g-dev libdav1d-dev dpkg-dev xz-utils)
((nvdec)) && packages+=(libffmpeg-nvenc-dev)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
((${#missing[@]} == 0)) || bash scripts/apt-install.sh build-ffmpeg "${missing[@]}"

# Debian's source package, through apt with a private source list: nothing on the host changes,
# and apt checks the files against the archive's signed index.
mkdir -p "$WORK/apt/lists/partial" "$WORK/apt/cache/archives/partial"
codename="$(. /etc/os-release && echo "${VERSION_CODENAME:?}")"
cat >"$WORK/apt/sources.list" <<EOF
deb-src http://deb.debian.org/debian $codename main
deb-src http://deb.debian.org/debian $codename-updates main
deb-src http://deb.debian.org/debian-security $codename-security main
EOF
apt_opts=(-o "Dir::Etc::SourceList=$WORK/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$WORK/apt/lists" -o "Dir::Cache=$WORK/apt/cache" -o APT::Sandbox::User=root)
upstream="${version#*:}"
upstream="${upstream%%-*}"
src="$WORK/ffmpeg-$upstream"
if [[ ! -x "$src/configure" ]]; then
    say "fetching Debian's source of ffmpeg $version"
    apt-get "${apt_opts[@]}" -qq update
    (cd "$WORK" && apt-get "${apt_opts[@]}" -qq source "ffmpeg=$version" >/dev/null)
fi

say "configuring (log: $src/ffbuild/config.log)"
(cd "$src" && ./configure "${options[@]}" >"$WORK/configure.out") || {
    tail -20 "$src/ffbuild/config.log" >&2
    exit 1
}
say "compiling with $(nproc) jobs"
make -C "$src" -s -j"$(nproc)" ffmpeg ffprobe >"$WORK/make.out" 2>&1 || {
    tail -30 "$WORK/make.out" >&2
    exit 1
}
install -d "$PREFIX/bin"
install -m 0755 "$src/ffmpeg" "$src/ffprobe" "$PREFIX/bin/"
echo "$stamp" >"$PREFIX/BUILD"
say "built $("$PREFIX/bin/ffmpeg" -hide_banner -version | head -1)"
say "shared libraries: $(ldd "$PREFIX/bin/ffmpeg" | wc -l) (Debian's ffmpeg: $(ldd "$(command -v ffmpeg)" | wc -l))"
echo "$PREFIX/bin"
