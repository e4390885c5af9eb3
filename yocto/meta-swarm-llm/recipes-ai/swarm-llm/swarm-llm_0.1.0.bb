SUMMARY = "Edge question answering over MQTT with a swarm of small language models"
DESCRIPTION = "swarm-llm answers questions published over MQTT with quantized \
small language models run in-process through llama.cpp, lets several of them \
vote when unsure and escalates to a cloud model over an OpenAI-compatible API."
HOMEPAGE = "https://example.invalid/swarm-llm"
SECTION = "net"
LICENSE = "Apache-2.0"
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

# CUDA offload on Jetson (meta-tegra): PACKAGECONFIG:append:pn-swarm-llm = " cuda"
# in local.conf, with gpu_layers set in the config.
PACKAGECONFIG ??= ""
PACKAGECONFIG[cuda] = "--features cuda,,cuda-cudart cuda-driver libcublas"

SYSTEMD_SERVICE:${PN} = "swarm-llm.service"

# A fixed system user instead of the unit's DynamicUser=, so the state folder
# keeps its owner on a read-only root file system.
USERADD_PACKAGES = "${PN}"
USERADD_PARAM:${PN} = "--system --home-dir ${localstatedir}/lib/swarm-llm --no-create-home --shell /sbin/nologin --user-group swarm-llm"

do_install:append() {
    install -d ${D}${systemd_system_unitdir}/swarm-llm.service.d
    install -m 0644 ${S}/systemd/swarm-llm.service ${D}${systemd_system_unitdir}/
    printf '[Service]\nDynamicUser=no\nUser=swarm-llm\nGroup=swarm-llm\n' \
        > ${D}${systemd_system_unitdir}/swarm-llm.service.d/10-system-user.conf
    install -d ${D}${sysconfdir}/swarm-llm
    install -m 0640 ${S}/config/swarm.toml ${D}${sysconfdir}/swarm-llm/swarm.toml
    chown root:swarm-llm ${D}${sysconfdir}/swarm-llm/swarm.toml
}

FILES:${PN} += "${systemd_system_unitdir}/swarm-llm.service.d"
CONFFILES:${PN} = "${sysconfdir}/swarm-llm/swarm.toml"
RRECOMMENDS:${PN} = "swarm-llm-models"
