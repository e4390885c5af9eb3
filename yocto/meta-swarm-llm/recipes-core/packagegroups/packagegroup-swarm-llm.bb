SUMMARY = "swarm-llm with its models and a local MQTT broker"
DESCRIPTION = "Everything a board needs to answer questions over MQTT: the \
service, the three small models and mosquitto (from meta-networking) for \
boards that host their own broker."
LICENSE = "MIT"

inherit packagegroup

RDEPENDS:${PN} = "\
    swarm-llm \
    swarm-llm-models \
"
RRECOMMENDS:${PN} = "mosquitto"
