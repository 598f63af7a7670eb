//! A panic's payload as text, for a `panic` dead letter and a restarted replica's log line.

use std::any::Any;

/// The message a panic carried (`panic!("...")` gives a `&str` or a `String`), or a fixed
/// sentence for any other payload. Dead letters carry it, so it stays byte for byte the same.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "panic with a non-text payload".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_payloads_become_their_text_and_others_a_fixed_sentence() {
        let caught = |f: fn()| std::panic::catch_unwind(f).expect_err("it panics");
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let literal = caught(|| panic!("a literal"));
        let formatted = caught(|| panic!("formatted {}", 42));
        let other = caught(|| std::panic::panic_any(7_u32));
        std::panic::set_hook(hook);
        assert_eq!(panic_message(literal.as_ref()), "a literal");
        assert_eq!(panic_message(formatted.as_ref()), "formatted 42");
        assert_eq!(panic_message(other.as_ref()), "panic with a non-text payload");
    }
}
