package bench;

import java.util.Properties;
import java.util.concurrent.CountDownLatch;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Produced;

/**
 * The identity DET as Kafka Streams would run it: every input record copied to the output
 * topic, exactly once (exactly_once_v2), with one standby replica.
 *
 * <p>Usage: {@code IdentityApp <bootstrap> <application.id> <input topic> <output topic> <state dir>}.
 * Prints {@code RUNNING active=<n>} on stdout each time the instance reaches RUNNING, with the
 * number of active tasks it holds, so the harness knows which instance to kill.
 *
 * <p>Every setting that shapes latency or failover is set here, with why; the rest are Kafka
 * Streams' defaults, as a user would run it.
 */
public final class IdentityApp {
    public static void main(String[] args) throws Exception {
        if (args.length != 5) {
            System.err.println("usage: IdentityApp <bootstrap> <application.id> <input> <output> <state dir>");
            System.exit(2);
        }
        Properties props = new Properties();
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, args[1]);
        props.put(StreamsConfig.STATE_DIR_CONFIG, args[4]);
        // The peer the design is compared against: exactly-once via transactions.
        props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        // A standby instance ready to take over, as the issue asks.
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

        StreamsBuilder builder = new StreamsBuilder();
        builder.stream(args[2], Consumed.with(Serdes.ByteArray(), Serdes.ByteArray()))
                .to(args[3], Produced.with(Serdes.ByteArray(), Serdes.ByteArray()));
        KafkaStreams streams = new KafkaStreams(builder.build(), props);
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
