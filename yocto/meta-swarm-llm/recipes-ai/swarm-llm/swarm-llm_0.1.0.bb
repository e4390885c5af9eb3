SUMMARY = "Edge question answering over MQTT with a swarm of small language models"
DESCRIPTION = "swarm-llm answers questions published over MQTT with quantized \
small language models run in-process through llama.cpp, lets several of them \
vote when unsure and escalates to a cloud model over an OpenAI-compatible API."
HOMEPAGE = "https://example.invalid/swarm-llm"
SECTION = "net"
# swarm-llm itself is Apache-2.0; the binary links llama.cpp (MIT) and the
# crates of Cargo.lock statically, under these licences (tests/yocto.rs
# checks the list against the crates the firmware build links).
LICENSE = "Apache-2.0 & MIT & ISC & BSD-3-Clause & Unicode-3.0 & Zlib"
LIC_FILES_CHKSUM = "file://LICENSE;md5=3b83ef96387f14655fc854ddc3c6bd57"

DEPENDS += "clang-native cmake-native"

# Point SRC_URI at your mirror of the repository and pin SRCREV to the
# release commit in a bbappend; AUTOREV only suits development builds.
PV = "0.1.0+git"
SRC_URI = "git://example.invalid/swarm-llm.git;protocol=https;branch=main"
# nooelint: oelint.vars.autorev
SRCREV = "${AUTOREV}"
S = "${WORKDIR}/git"

inherit cargo cargo-update-recipe-crates systemd useradd
# meta-tegra's CUDA toolchain setup, with PACKAGECONFIG cuda (below).
inherit_defer ${@bb.utils.contains('PACKAGECONFIG', 'cuda', 'cuda', '', d)}

# Every registry crate of Cargo.lock, pinned by sha256 (scripts/yocto-crates).
require ${BPN}-crates.inc

# llama-cpp-sys-2 builds llama.cpp with CMake (cmake-native) and generates
# its bindings with bindgen, which loads libclang from the native sysroot
# (clang-native).
export LIBCLANG_PATH = "${STAGING_LIBDIR_NATIVE}"
export BINDGEN_EXTRA_CLANG_ARGS = "--sysroot=${STAGING_DIR_TARGET} ${TUNE_CCARGS}"

# The ARM level llama.cpp's kernels are compiled for. Without it the build
# script picks plain armv8-a and the dot-product kernels are left out, which
# costs Pi 5 and Orin most of their int8 speed. scripts/arm-level.cmake puts
# this level back after the build script has pinned armv8-a.
SWARM_LLM_ARM_ARCH ??= "armv8-a"
SWARM_LLM_ARM_ARCH:raspberrypi5 = "armv8.2-a+dotprod"
SWARM_LLM_ARM_ARCH:jetson-orin-nano-devkit = "armv8.2-a+dotprod+fp16"
SWARM_LLM_ARM_ARCH:jetson-agx-orin-devkit = "armv8.2-a+dotprod+fp16"
export GGML_CPU_ARM_ARCH = "${SWARM_LLM_ARM_ARCH}"
export CMAKE_PROJECT_INCLUDE = "${S}/scripts/arm-level.cmake"

# The firmware leaves out the measuring commands (the default `measure`
# feature). CUDA offload on Jetson (meta-tegra, whose cuda class the recipe
# then inherits): PACKAGECONFIG:append:pn-swarm-llm = " cuda" in local.conf,
# with gpu_layers set in the config. The feature goes on cargo's command
# line: oe-core's cargo class passes CARGO_BUILD_FLAGS, and nothing of
# PACKAGECONFIG's first field.
PACKAGECONFIG ??= ""
PACKAGECONFIG[cuda] = ",,cuda-cudart cuda-driver libcublas"
CARGO_BUILD_FLAGS:append = " --no-default-features ${@bb.utils.contains('PACKAGECONFIG', 'cuda', '--features cuda', '', d)}"

# The Prometheus endpoint's port, or empty for none: set, the image gets a
# config drop-in that listens on it and a unit drop-in that lets the unit's
# SocketBindDeny=any allow it (systemd/metrics.conf).
SWARM_LLM_METRICS_PORT ??= ""

SYSTEMD_SERVICE:${PN} = "swarm-llm.service"

# A fixed system user instead of the unit's DynamicUser=, so the state folder
# keeps its owner on a read-only root file system.
USERADD_PACKAGES = "${PN}"
USERADD_PARAM:${PN} = "--system --home-dir ${localstatedir}/lib/swarm-llm --no-create-home --shell /sbin/nologin --user-group swarm-llm"

do_install:append() {
    unitdir=${D}${systemd_system_unitdir}
    install -d $unitdir/swarm-llm.service.d
    install -m 0644 ${S}/systemd/swarm-llm.service $unitdir/
    install -m 0644 ${S}/systemd/swarm-llm.service.d/credentials.conf $unitdir/swarm-llm.service.d/
    printf '[Service]\nDynamicUser=no\nUser=swarm-llm\nGroup=swarm-llm\n' \
        > $unitdir/swarm-llm.service.d/10-system-user.conf
    if ${@bb.utils.contains('PACKAGECONFIG', 'cuda', 'true', 'false', d)}; then
        install -m 0644 ${S}/systemd/jetson-gpu.conf $unitdir/swarm-llm.service.d/
    fi

    # The board's config: no node name (each board takes its hostname) and
    # no cloud; the site's and each board's settings go in swarm.toml.d/.
    install -d ${D}${sysconfdir}/swarm-llm/swarm.toml.d
    install -m 0640 ${S}/config/swarm.toml ${D}${sysconfdir}/swarm-llm/swarm.toml
    chown root:swarm-llm ${D}${sysconfdir}/swarm-llm/swarm.toml
    if [ -n "${SWARM_LLM_METRICS_PORT}" ]; then
        printf '[metrics]\nlisten = "0.0.0.0:%s"\n' "${SWARM_LLM_METRICS_PORT}" \
            > ${D}${sysconfdir}/swarm-llm/swarm.toml.d/20-metrics.toml
        sed 's/tcp:9464/tcp:${SWARM_LLM_METRICS_PORT}/' ${S}/systemd/metrics.conf \
            > $unitdir/swarm-llm.service.d/20-metrics.conf
    fi

    # The unit's Documentation=. Man pages and shell completions describe
    # the binary that prints them: `swarm-llm man`, `swarm-llm completions`.
    install -d ${D}${docdir}/${BPN}
    install -m 0644 ${S}/docs/operations.md ${S}/docs/configuration.md ${S}/docs/fleet.md ${D}${docdir}/${BPN}/
}

FILES:${PN} += "${systemd_system_unitdir}/swarm-llm.service.d"
CONFFILES:${PN} = "${sysconfdir}/swarm-llm/swarm.toml"
# The cloud's TLS check reads the system's certificate store.
RDEPENDS:${PN} += "ca-certificates"
RRECOMMENDS:${PN} = "swarm-llm-models"
