package bench;

import java.io.IOException;
import java.math.BigInteger;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.ProcessorSupplier;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.state.StoreBuilder;

/**
 * The order-matching engine of {@code transformers/matching-engine} (lib.rs, book.rs,
 * messages.rs) on Kafka Streams: the same JSON commands in, the same JSON reports out, in the
 * same order, one output record per report, each keyed by its input's key (the benchmark puts
 * the input's sequence number there).
 *
 * <p>Price-time priority, trades at the maker's price, market orders cancel what finds no
 * liquidity, at most {@value #FILLS_PER_ORDER_MAX} fills per order, order ids never reused;
 * business-rule violations are {@code rejected} reports. Inputs the Rust engine dead-letters (not
 * a command serde_json decodes, see {@link Command#parse}; an empty or over-long {@code order_id}
 * or {@code account}) produce no output here either; they are logged to stderr and skipped.
 *
 * <p>Its state lives in the {@link EngineStore} state store, connected through {@link
 * ProcessorSupplier#stores()}.
 */
final class MatchingEngine {
    /** Longest {@code order_id} and {@code account}, in UTF-8 bytes, as in lib.rs. */
    static final int ORDER_ID_BYTES_MAX = 64, ACCOUNT_BYTES_MAX = 64;
    /** Most executions one incoming order may make, as in lib.rs. */
    static final int FILLS_PER_ORDER_MAX = 400;

    /** Reads commands ({@link Command#parse}) and writes reports. */
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final BigInteger U64_END = BigInteger.ONE.shiftLeft(64);

    private MatchingEngine() {}

    /** {@code stream(input).process(engine).to(output)}, bytes in and out. */
    static Topology topology(String input, String output) {
        StreamsBuilder builder = new StreamsBuilder();
        builder.stream(input, Consumed.with(Serdes.ByteArray(), Serdes.ByteArray()))
                .process(new Supplier())
                .to(output, Produced.with(Serdes.ByteArray(), Serdes.ByteArray()));
        return builder.build();
    }

    /** Which side of the book an order is on. */
    enum Side {
        BUY("buy"),
        SELL("sell");

        final String json;

        Side(String json) {
            this.json = json;
        }

        Side opposite() {
            return this == BUY ? SELL : BUY;
        }
    }

    /** An input the Rust engine would dead-letter: a decode or a schema error. */
    static final class BadInput extends Exception {
        BadInput(String message) {
            super(message);
        }
    }

    /** One input command (messages.rs {@code Command}); {@code price} is null for a market order. */
    record Command(String type, String orderId, String account, Side side, Long price, long quantity) {
        /** The fields each command type reads, besides {@code type}. */
        private static final Map<String, List<String>> FIELDS = Map.of(
                "limit", List.of("order_id", "account", "side", "price", "quantity"),
                "market", List.of("order_id", "account", "side", "quantity"),
                "cancel", List.of("order_id"));
        /** serde_json's recursion limit: an input nested deeper does not decode. */
        private static final int DEPTH_MAX = 127;

        /** One scalar value of a top-level field: its token and its text as written. */
        private record Scalar(JsonToken token, String text) {}

        /**
         * Decodes a command as serde_json decodes messages.rs' internally tagged {@code Command},
         * so that an input is rejected here exactly when the Rust engine dead-letters it: JSON
         * with nothing after it, an object, {@code type} once, each field of that type once and
         * of the right type, other fields ignored (but still JSON serde_json accepts: no
         * unpaired surrogate escape, no number out of f64 range, nested at most {@value
         * #DEPTH_MAX} deep). Read with the streaming parser, since the tree loses what serde
         * sees: {@code -0} is a float to serde_json, not a u64.
         */
        static Command parse(byte[] payload) throws BadInput {
            Map<String, List<Scalar>> seen = new HashMap<>();
            try (JsonParser in = JSON.getFactory().createParser(payload)) {
                if (in.nextToken() != JsonToken.START_OBJECT) {
                    throw new BadInput("not a JSON object");
                }
                String field = null;
                for (int depth = 1; depth > 0; ) {
                    JsonToken token = in.nextToken();
                    if (token == JsonToken.START_OBJECT || token == JsonToken.START_ARRAY) {
                        if (depth == 1) {
                            seen.computeIfAbsent(field, f -> new ArrayList<>()).add(new Scalar(token, null));
                        }
                        if (++depth > DEPTH_MAX) {
                            throw new BadInput("nested deeper than " + DEPTH_MAX);
                        }
                    } else if (token == JsonToken.END_OBJECT || token == JsonToken.END_ARRAY) {
                        depth--;
                    } else if (token == JsonToken.FIELD_NAME) {
                        field = whole(in.currentName());
                    } else {
                        if (token == JsonToken.VALUE_STRING) {
                            whole(in.getText());
                        } else if (token == JsonToken.VALUE_NUMBER_FLOAT && Double.isInfinite(in.getDoubleValue())) {
                            throw new BadInput("a number out of range");
                        }
                        if (depth == 1) {
                            seen.computeIfAbsent(field, f -> new ArrayList<>()).add(new Scalar(token, in.getText()));
                        }
                    }
                }
                if (in.nextToken() != null) {
                    throw new BadInput("trailing data after the command");
                }
            } catch (IOException e) {
                throw new BadInput("not JSON: " + e.getMessage());
            }
            String type = text(seen, "type");
            List<String> fields = FIELDS.get(type);
            if (fields == null) {
                throw new BadInput("unknown command type `" + type + "`");
            }
            for (String name : fields) {
                if (seen.getOrDefault(name, List.of()).size() != 1) {
                    throw new BadInput("`" + name + "` missing or repeated");
                }
            }
            return switch (type) {
                case "limit" -> new Command(type, text(seen, "order_id"), text(seen, "account"), side(seen), u64(seen, "price"), u64(seen, "quantity"));
                case "market" -> new Command(type, text(seen, "order_id"), text(seen, "account"), side(seen), null, u64(seen, "quantity"));
                default -> new Command(type, text(seen, "order_id"), null, null, null, 0);
            };
        }

        /** The one value of {@code field}. */
        private static Scalar one(Map<String, List<Scalar>> seen, String field) throws BadInput {
            List<Scalar> values = seen.getOrDefault(field, List.of());
            if (values.size() != 1) {
                throw new BadInput("`" + field + "` missing or repeated");
            }
            return values.get(0);
        }

        private static String text(Map<String, List<Scalar>> seen, String field) throws BadInput {
            Scalar value = one(seen, field);
            if (value.token() != JsonToken.VALUE_STRING) {
                throw new BadInput("`" + field + "` must be a string");
            }
            return value.text();
        }

        private static Side side(Map<String, List<Scalar>> seen) throws BadInput {
            return switch (text(seen, "side")) {
                case "buy" -> Side.BUY;
                case "sell" -> Side.SELL;
                default -> throw new BadInput("`side` must be buy or sell");
            };
        }

        /** A JSON integer in [0, 2^64) without a sign, its bits in a long: serde's u64. */
        private static long u64(Map<String, List<Scalar>> seen, String field) throws BadInput {
            Scalar value = one(seen, field);
            if (value.token() != JsonToken.VALUE_NUMBER_INT || value.text().startsWith("-")) {
                throw new BadInput("`" + field + "` must be a non-negative integer");
            }
            BigInteger number = new BigInteger(value.text());
            if (number.compareTo(U64_END) >= 0) {
                throw new BadInput("`" + field + "` must fit in a u64");
            }
            return number.longValue();
        }

        /** {@code text}, unless it holds an unpaired surrogate, which serde_json refuses to decode. */
        private static String whole(String text) throws BadInput {
            for (int i = 0; i < text.length(); i++) {
                char c = text.charAt(i);
                if (Character.isHighSurrogate(c) && i + 1 < text.length() && Character.isLowSurrogate(text.charAt(i + 1))) {
                    i++;
                } else if (Character.isSurrogate(c)) {
                    throw new BadInput("an unpaired surrogate in a string");
                }
            }
            return text;
        }
    }

    /** Executes one command against the book and returns its reports, in order (lib.rs {@code execute}). */
    static List<ObjectNode> execute(Command command, EngineStore state) throws BadInput {
        checkText("order_id", command.orderId(), ORDER_ID_BYTES_MAX);
        if (command.type().equals("cancel")) {
            Book book = state.book();
            Book.Resting order = book.remove(command.orderId());
            if (order == null) {
                return List.of(rejected(command.orderId(), "unknown_order"));
            }
            state.save(book);
            return List.of(cancelled(command.orderId(), order.remaining, "requested"));
        }
        checkText("account", command.account(), ACCOUNT_BYTES_MAX);
        return submit(command, state);
    }

    /** Checks the business rules, matches, then rests (limit) or cancels (market) what is left. */
    private static List<ObjectNode> submit(Command command, EngineStore state) {
        String orderId = command.orderId(), account = command.account();
        Side side = command.side();
        Long limit = command.price();
        String rejection = state.known(orderId) ? "duplicate_order_id"
                : command.quantity() == 0 ? "zero_quantity"
                : limit != null && limit == 0 ? "zero_price"
                : null;
        if (rejection != null) {
            return List.of(rejected(orderId, rejection));
        }
        state.accept(orderId);
        Book book = state.book();
        List<ObjectNode> reports = new ArrayList<>();
        ObjectNode accepted = report("accepted").put("order_id", orderId).put("account", account).put("side", side.json);
        if (limit != null) {
            putU64(accepted, "price", limit);
        }
        reports.add(putU64(accepted, "quantity", command.quantity()));
        long remaining = command.quantity();
        List<Book.Fill> fills = book.take(side, limit, remaining, FILLS_PER_ORDER_MAX);
        for (Book.Fill fill : fills) {
            remaining -= fill.quantity();
            ObjectNode trade = putU64(report("trade"), "trade_id", book.nextTradeId++)
                    .put("taker_order_id", orderId)
                    .put("maker_order_id", fill.makerOrderId())
                    .put("taker_account", account)
                    .put("maker_account", fill.makerAccount());
            putU64(trade, "price", fill.price());
            putU64(trade, "quantity", fill.quantity());
            reports.add(trade.put("taker_side", side.json));
            if (fill.makerRemaining() == 0) {
                reports.add(report("filled").put("order_id", fill.makerOrderId()));
            }
        }
        boolean changed = !fills.isEmpty();
        if (remaining == 0) {
            reports.add(report("filled").put("order_id", orderId));
        } else if (book.isMatchable(side, limit)) {
            reports.add(cancelled(orderId, remaining, "fill_limit"));
        } else if (limit != null) {
            book.insert(side, new Book.Resting(orderId, account, limit, remaining));
            changed = true;
            ObjectNode rested = report("rested").put("order_id", orderId).put("side", side.json);
            putU64(rested, "price", limit);
            reports.add(putU64(rested, "remaining", remaining));
        } else {
            reports.add(cancelled(orderId, remaining, "no_liquidity"));
        }
        if (changed) {
            state.save(book);
        }
        return reports;
    }

    /** An identifier must be present and bounded, or no report could name what it answers. */
    private static void checkText(String field, String value, int bytesMax) throws BadInput {
        int bytes = value.getBytes(StandardCharsets.UTF_8).length;
        if (bytes == 0 || bytes > bytesMax) {
            throw new BadInput("`" + field + "` must be 1 to " + bytesMax + " bytes, got " + bytes);
        }
    }

    /** A report object; fields go in messages.rs' declaration order, {@code type} first, as serde writes them. */
    private static ObjectNode report(String type) {
        return JSON.createObjectNode().put("type", type);
    }

    private static ObjectNode rejected(String orderId, String reason) {
        return report("rejected").put("order_id", orderId).put("reason", reason);
    }

    private static ObjectNode cancelled(String orderId, long remaining, String reason) {
        return putU64(report("cancelled").put("order_id", orderId), "remaining", remaining).put("reason", reason);
    }

    private static ObjectNode putU64(ObjectNode node, String field, long value) {
        return value >= 0 ? node.put(field, value) : node.put(field, new BigInteger(Long.toUnsignedString(value)));
    }

    /** Connects the {@link EngineStore} to every processor it makes. */
    static final class Supplier implements ProcessorSupplier<byte[], byte[], byte[], byte[]> {
        @Override
        public Processor<byte[], byte[], byte[], byte[]> get() {
            return new EngineProcessor();
        }

        @Override
        public Set<StoreBuilder<?>> stores() {
            return Set.of(EngineStore.builder());
        }
    }

    /** One task's engine: every report of an input forwarded with the input's key and timestamp. */
    static final class EngineProcessor implements Processor<byte[], byte[], byte[], byte[]> {
        private ProcessorContext<byte[], byte[]> context;
        private EngineStore state;

        @Override
        public void init(ProcessorContext<byte[], byte[]> context) {
            this.context = context;
            this.state = new EngineStore(context.getStateStore(EngineStore.NAME));
        }

        @Override
        public void process(Record<byte[], byte[]> input) {
            List<ObjectNode> reports;
            try {
                reports = execute(Command.parse(input.value() == null ? new byte[0] : input.value()), state);
            } catch (BadInput e) {
                // What the framework would dead-letter: no report, the stream goes on.
                System.err.println("skipped an input (" + e.getMessage() + ")");
                return;
            }
            for (ObjectNode report : reports) {
                byte[] value;
                try {
                    value = JSON.writeValueAsBytes(report);
                } catch (IOException e) {
                    throw new IllegalStateException("a report of strings and numbers always serializes", e);
                }
                context.forward(input.withValue(value));
            }
        }
    }
}
