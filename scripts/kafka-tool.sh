#!/usr/bin/env bash
# Runs a Kafka CLI tool from the jars cached by scripts/kafka.sh (there is no Kafka tarball,
# so no bin/kafka-*.sh). Fetches the jars first if needed.
usage() {
  cat <<'EOF'
Usage: scripts/kafka-tool.sh TOOL [ARGS...]     (ARGS as for Kafka's bin/kafka-TOOL.sh)

  topics              org.apache.kafka.tools.TopicCommand
  console-producer    org.apache.kafka.tools.ConsoleProducer
  console-consumer    org.apache.kafka.tools.consumer.ConsoleConsumer
  consumer-groups     org.apache.kafka.tools.consumer.group.ConsumerGroupCommand
  get-offsets         org.apache.kafka.tools.GetOffsetShell
  transactions        org.apache.kafka.tools.TransactionsCommand
  producer-perf-test  org.apache.kafka.tools.ProducerPerformance
  consumer-perf-test  org.apache.kafka.tools.ConsumerPerformance
  metadata-quorum     org.apache.kafka.tools.MetadataQuorumCommand
  features            org.apache.kafka.tools.FeatureCommand
  delete-records      org.apache.kafka.tools.DeleteRecordsCommand
  dump-log            kafka.tools.DumpLogSegments
  <fully.qualified.Class>  any other main class on the classpath

Example: scripts/kafka-tool.sh topics --bootstrap-server 127.0.0.1:9092 --list
Tool logging: warnings only, on stderr. KAFKA_CACHE_DIR and JAVA_HOME as for scripts/kafka.sh.
EOF
}
set -euo pipefail

SCRIPTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
case ${1:-} in
  "" | -h | --help | help) usage; exit 0 ;;
  topics) class=org.apache.kafka.tools.TopicCommand ;;
  console-producer) class=org.apache.kafka.tools.ConsoleProducer ;;
  console-consumer) class=org.apache.kafka.tools.consumer.ConsoleConsumer ;;
  consumer-groups) class=org.apache.kafka.tools.consumer.group.ConsumerGroupCommand ;;
  get-offsets) class=org.apache.kafka.tools.GetOffsetShell ;;
  transactions) class=org.apache.kafka.tools.TransactionsCommand ;;
  producer-perf-test) class=org.apache.kafka.tools.ProducerPerformance ;;
  consumer-perf-test) class=org.apache.kafka.tools.ConsumerPerformance ;;
  metadata-quorum) class=org.apache.kafka.tools.MetadataQuorumCommand ;;
  features) class=org.apache.kafka.tools.FeatureCommand ;;
  delete-records) class=org.apache.kafka.tools.DeleteRecordsCommand ;;
  dump-log) class=kafka.tools.DumpLogSegments ;;
  *.*) class=$1 ;;
  *) usage >&2; exit 2 ;;
esac
shift

# Same cache location rule as scripts/kafka.sh (the version is pinned in the POM).
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$SCRIPTS_DIR/kafka/pom.xml")
libs=${KAFKA_CACHE_DIR:-$HOME/.cache/competing-transformers/kafka-$version}/libs
"$SCRIPTS_DIR/kafka.sh" fetch --quiet

JAVA=${JAVA_HOME:+$JAVA_HOME/bin/}java
command -v "$JAVA" >/dev/null ||
  { echo "kafka-tool: java not found (PATH or JAVA_HOME); install Java 17+." >&2; exit 1; }
# Small heap: these are short-lived clients, often run while brokers use the memory.
exec "$JAVA" -Xmx256m -XX:+UseSerialGC -Djava.awt.headless=true \
  -Dlog4j2.configurationFile="$SCRIPTS_DIR/kafka/tools-log4j2.properties" \
  -cp "$libs/*" "$class" "$@"
