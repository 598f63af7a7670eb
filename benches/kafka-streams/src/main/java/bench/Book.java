package bench;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

import bench.MatchingEngine.Side;

/**
 * The order book (book.rs) and the trade counter: resting limit orders by side and price, oldest
 * first within a price, matched in price-time priority. Pure data and matching, as in Rust; it
 * is read from and written back to the {@link EngineStore} whole, around each input.
 *
 * <p>Prices and quantities are u64 in the Rust engine: they are held in {@code long}s as
 * unsigned values and compared with {@link Long#compareUnsigned}.
 */
final class Book {
    private static final Comparator<Long> UNSIGNED = Long::compareUnsigned;

    /** A limit order waiting in the book; {@code remaining} is never zero while it rests. */
    static final class Resting {
        final String orderId, account;
        final long price;
        long remaining;

        Resting(String orderId, String account, long price, long remaining) {
            this.orderId = orderId;
            this.account = account;
            this.price = price;
            this.remaining = remaining;
        }
    }

    /** One execution of an incoming order against a resting one, as {@link #take} makes it. */
    record Fill(String makerOrderId, String makerAccount, long price, long quantity, long makerRemaining) {}

    /** The id the next trade takes; the first is 1. */
    long nextTradeId = 1;
    /** Each side's levels, best price first: bids highest first, asks lowest first. */
    private final TreeMap<Long, ArrayDeque<Resting>> bids = new TreeMap<>(UNSIGNED.reversed());
    private final TreeMap<Long, ArrayDeque<Resting>> asks = new TreeMap<>(UNSIGNED);

    private TreeMap<Long, ArrayDeque<Resting>> levels(Side side) {
        return side == Side.BUY ? bids : asks;
    }

    /**
     * Whether an incoming order of {@code side} with this limit ({@code null}: a market order)
     * would trade against the best opposite order now.
     */
    boolean isMatchable(Side side, Long limit) {
        TreeMap<Long, ArrayDeque<Resting>> opposite = levels(side.opposite());
        return !opposite.isEmpty() && crosses(side, limit, opposite.firstKey());
    }

    /** Whether a taker of {@code side} with this limit ({@code null}: market) trades at {@code price}. */
    private static boolean crosses(Side side, Long limit, long price) {
        if (limit == null) {
            return true;
        }
        int order = Long.compareUnsigned(price, limit);
        return side == Side.BUY ? order <= 0 : order >= 0;
    }

    /**
     * Rests an order at the back of its price level. The caller matches it first ({@link
     * #take}): resting an order that could trade would cross the book.
     */
    void insert(Side side, Resting order) {
        assert order.remaining != 0 && !isMatchable(side, order.price) : "a resting order would cross the book";
        levels(side).computeIfAbsent(order.price, price -> new ArrayDeque<>()).addLast(order);
    }

    /** Removes a resting order and returns it, or {@code null} if no order with this id rests. */
    Resting remove(String orderId) {
        for (TreeMap<Long, ArrayDeque<Resting>> side : List.of(bids, asks)) {
            for (Iterator<Map.Entry<Long, ArrayDeque<Resting>>> levels = side.entrySet().iterator(); levels.hasNext(); ) {
                ArrayDeque<Resting> level = levels.next().getValue();
                for (Iterator<Resting> orders = level.iterator(); orders.hasNext(); ) {
                    Resting order = orders.next();
                    if (order.orderId.equals(orderId)) {
                        orders.remove();
                        if (level.isEmpty()) {
                            levels.remove();
                        }
                        return order;
                    }
                }
            }
        }
        return null;
    }

    /**
     * Matches an incoming order of {@code side} against the opposite side: best price first,
     * oldest first within a price, at each maker's price. Stops when {@code quantity} is filled,
     * when the best opposite price is worse than {@code limit} ({@code null}: any price), or
     * after {@code fillsMax} fills. Makers that fill completely leave the book.
     */
    List<Fill> take(Side side, Long limit, long quantity, int fillsMax) {
        List<Fill> fills = new ArrayList<>();
        TreeMap<Long, ArrayDeque<Resting>> opposite = levels(side.opposite());
        long remaining = quantity;
        while (remaining != 0 && fills.size() < fillsMax && isMatchable(side, limit)) {
            Map.Entry<Long, ArrayDeque<Resting>> best = opposite.firstEntry();
            Resting maker = best.getValue().peekFirst();
            long executed = Long.compareUnsigned(remaining, maker.remaining) <= 0 ? remaining : maker.remaining;
            maker.remaining -= executed;
            remaining -= executed;
            fills.add(new Fill(maker.orderId, maker.account, maker.price, executed, maker.remaining));
            if (maker.remaining == 0) {
                best.getValue().removeFirst();
                if (best.getValue().isEmpty()) {
                    opposite.remove(best.getKey());
                }
            }
        }
        return fills;
    }

    /** The book's bytes in the store: the trade counter, then each side's levels, best first. */
    byte[] encode() {
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        try (DataOutputStream out = new DataOutputStream(bytes)) {
            out.writeLong(nextTradeId);
            for (TreeMap<Long, ArrayDeque<Resting>> side : List.of(bids, asks)) {
                out.writeInt(side.size());
                for (Map.Entry<Long, ArrayDeque<Resting>> level : side.entrySet()) {
                    out.writeLong(level.getKey());
                    out.writeInt(level.getValue().size());
                    for (Resting order : level.getValue()) {
                        out.writeUTF(order.orderId);
                        out.writeUTF(order.account);
                        out.writeLong(order.remaining);
                    }
                }
            }
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return bytes.toByteArray();
    }

    /** The book {@link #encode} wrote; an empty book if {@code bytes} is null. */
    static Book decode(byte[] bytes) {
        Book book = new Book();
        if (bytes == null) {
            return book;
        }
        try (DataInputStream in = new DataInputStream(new ByteArrayInputStream(bytes))) {
            book.nextTradeId = in.readLong();
            for (TreeMap<Long, ArrayDeque<Resting>> side : List.of(book.bids, book.asks)) {
                for (int levels = in.readInt(); levels > 0; levels--) {
                    long price = in.readLong();
                    ArrayDeque<Resting> level = new ArrayDeque<>();
                    for (int orders = in.readInt(); orders > 0; orders--) {
                        level.addLast(new Resting(in.readUTF(), in.readUTF(), price, in.readLong()));
                    }
                    side.put(price, level);
                }
            }
        } catch (IOException e) {
            throw new UncheckedIOException("a corrupt book in the state store", e);
        }
        return book;
    }
}
