package bench;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;

import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.StoreBuilder;
import org.apache.kafka.streams.state.Stores;

/**
 * The matching engine's whole state (the Rust engine's {@code OrderBook}, {@code order_ids} and
 * {@code next_trade_id}) in one persistent Kafka Streams key-value store, RocksDB with a changelog
 * topic, and nowhere else: the processor keeps no copy between inputs, so whichever instance runs
 * the task (after a failover, or after an exactly-once abort wiped its local copy) computes from
 * exactly what the changelog restored.
 *
 * <p>Two kinds of entries, told apart by their first byte:
 *
 * <ul>
 *   <li>{@code 'B'} → the {@link Book} and the trade counter, one value. Every order reads the
 *       best levels and may change any of them, so it reads and writes the book whole; the book
 *       holds resting orders only, which matching keeps few (the benchmark's load never rests
 *       more than three). A deep book would be split by price level. One entry per resting order,
 *       scanned in price-time order, was tried first and is much slower: each fill deletes the
 *       order at the front of its level, and every later RocksDB scan of that side walks over the
 *       tombstones until a compaction (from a backlog it fell below 500 inputs a second within
 *       15,000 inputs; this layout runs several thousand a second).
 *   <li>{@code 'O' order_id} → every order id ever accepted (ids are never reused): a set that
 *       only grows, so one small entry each, read and written by point lookups.
 * </ul>
 *
 * <p>Caching is on, as for Kafka Streams' DSL stores by default: the book, written by every input,
 * reaches RocksDB and the changelog once per commit (every 100 ms under exactly_once_v2, inside
 * the commit's transaction).
 */
final class EngineStore {
    /** The store's name; its changelog topic is {@code <application.id>-matching-engine-state-changelog}. */
    static final String NAME = "matching-engine-state";

    private static final byte ORDER = 'O';
    private static final Bytes BOOK = Bytes.wrap(new byte[] {'B'});
    private static final byte[] ACCEPTED = new byte[0];

    static StoreBuilder<KeyValueStore<Bytes, byte[]>> builder() {
        return Stores.keyValueStoreBuilder(Stores.persistentKeyValueStore(NAME), Serdes.Bytes(), Serdes.ByteArray())
                .withCachingEnabled();
    }

    private final KeyValueStore<Bytes, byte[]> store;

    EngineStore(KeyValueStore<Bytes, byte[]> store) {
        this.store = store;
    }

    /** Whether an order with this id was ever accepted. */
    boolean known(String orderId) {
        return store.get(orderKey(orderId)) != null;
    }

    /** Records that an order with this id was accepted. */
    void accept(String orderId) {
        store.put(orderKey(orderId), ACCEPTED);
    }

    /** The book as the last input left it (empty at first). */
    Book book() {
        return Book.decode(store.get(BOOK));
    }

    /** Keeps the book for the next input. */
    void save(Book book) {
        store.put(BOOK, book.encode());
    }

    private static Bytes orderKey(String orderId) {
        byte[] id = orderId.getBytes(StandardCharsets.UTF_8);
        return Bytes.wrap(ByteBuffer.allocate(1 + id.length).put(ORDER).put(id).array());
    }
}
