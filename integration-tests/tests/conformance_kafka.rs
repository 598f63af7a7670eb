//! The EventLog conformance suite against the real broker, in both write modes. The memory
//! log runs the same suite in the library's unit tests.

mod kafka_record_groups {
    competing_transformers_kafka::event_log_conformance!(integration_tests::KafkaBackend::record_groups());
}

mod kafka_transactional {
    competing_transformers_kafka::event_log_conformance!(integration_tests::KafkaBackend::transactional());
}
