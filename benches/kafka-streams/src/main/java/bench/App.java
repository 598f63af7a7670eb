package bench;

import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Produced;

/**
 * The benchmark's DETs as Kafka Streams would run them, exactly once (exactly_once_v2), with
 * one standby replica:
 *
 * <ul>
 *   <li>{@code identity}: every input record copied to the output topic;
 *   <li>{@code matching-engine}: the order-matching engine of
 *       {@code transformers/matching-engine}, its book in a state store ({@link MatchingEngine}).
 * </ul>
 *
 * <p>Usage: {@code App [--det identity|matching-engine] <bootstrap> <application.id> <input
 * topic> <output topic> <state dir>} ({@code identity} if no DET is named). Prints {@code
 * RUNNING active=<n>} on stdout each time the instance reaches RUNNING, with the number of
 * active tasks it holds, so the harness knows which instance to kill.
 *
 * <p>Every setting that shapes latency or failover is set in {@link #settings}, with why, and
 * is the same for both DETs; the rest are Kafka Streams' defaults, as a user would run it.
 */
public final class App {
    private static final String USAGE =
            "usage: App [--det identity|matching-engine] <bootstrap> <application.id> <input> <output> <state dir>";

    public static void main(String[] args) throws Exception {
        String det = "identity";
        List<String> positional = new ArrayList<>();
        for (int i = 0; i < args.length; i++) {
            if (args[i].equals("--det") && i + 1 < args.length) {
                det = args[++i];
            } else {
                positional.add(args[i]);
            }
        }
        if (positional.size() != 5) {
            System.err.println(USAGE);
            System.exit(2);
        }
        String bootstrap = positional.get(0), applicationId = positional.get(1);
        String input = positional.get(2), output = positional.get(3), stateDir = positional.get(4);
        Topology topology;
        switch (det) {
            case "identity" -> topology = identity(input, output);
            case "matching-engine" -> topology = MatchingEngine.topology(input, output);
            default -> {
                System.err.println("unknown DET `" + det + "`: identity or matching-engine\n" + USAGE);
                System.exit(2);
                return;
            }
        }
        run(topology, settings(bootstrap, applicationId, stateDir));
    }

    /** The settings of every DET's app: the peer as the benchmark compares it. */
    static Properties settings(String bootstrap, String applicationId, String stateDir) {
        Properties props = new Properties();
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, applicationId);
        props.put(StreamsConfig.STATE_DIR_CONFIG, stateDir);
        // The peer the design is compared against: exactly-once via transactions (outputs,
        // state store changelog writes and input offsets commit together).
        props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        // A standby instance ready to take over, Streams at its best: it keeps a copy of every
        // state store by reading its changelog, so a failover restores only the tail.
        props.put(StreamsConfig.NUM_STANDBY_REPLICAS_CONFIG, 1);
        // commit.interval.ms stays at its exactly_once_v2 default (100 ms): output becomes
        // visible to read_committed readers only at a commit.
        // The fastest failure detection a classic consumer group allows (the broker's
        // group.min.session.timeout.ms is 6 s; the default is 45 s): the most favourable case.
        props.put(StreamsConfig.consumerPrefix(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG), 6000);
        props.put(StreamsConfig.consumerPrefix(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG), 1500);
        // Latency, not batching, on the fetch side (the same as the Rust log's readers).
        props.put(StreamsConfig.consumerPrefix(ConsumerConfig.FETCH_MAX_WAIT_MS_CONFIG), 5);
        props.put(StreamsConfig.producerPrefix("linger.ms"), 0);
        return props;
    }

    /** The identity DET: {@code stream(in).to(out)}, bytes untouched. */
    static Topology identity(String input, String output) {
        StreamsBuilder builder = new StreamsBuilder();
        builder.stream(input, Consumed.with(Serdes.ByteArray(), Serdes.ByteArray()))
                .to(output, Produced.with(Serdes.ByteArray(), Serdes.ByteArray()));
        return builder.build();
    }

    /** Runs the app until SIGTERM, or until it stops or fails by itself. */
    private static void run(Topology topology, Properties props) throws InterruptedException {
        KafkaStreams streams = new KafkaStreams(topology, props);
        CountDownLatch done = new CountDownLatch(1);
        streams.setStateListener((now, before) -> {
            if (now == KafkaStreams.State.RUNNING) {
                int active = streams.metadataForLocalThreads().stream().mapToInt(t -> t.activeTasks().size()).sum();
                System.out.println("RUNNING active=" + active);
                System.out.flush();
            }
            if (now == KafkaStreams.State.NOT_RUNNING || now == KafkaStreams.State.ERROR) {
                done.countDown();
            }
        });
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            streams.close();
            done.countDown();
        }));
        streams.start();
        done.await();
    }
}
