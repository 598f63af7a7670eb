//! The transforms a launcher binary can run, by the name config files use.
//!
//! The framework cannot depend on the DETs built on it, so a launcher binary registers them:
//! `Registry::new().with("matching-engine", MatchingEngine::new)`, then hands the registry to
//! [`crate::main_with`]. A replica gets a fresh transform from the factory each time it starts
//! (or restarts), since a transform's state is rebuilt by replaying the log.

use std::collections::BTreeMap;

use competing_transformers::event::EventSourceKey;
use competing_transformers::transform::Transform;

/// Makes a fresh transform, in its initial state.
pub type Factory = Box<dyn Fn() -> Box<dyn Transform> + Send + Sync>;

/// Name → factory of every transform a launcher binary can run.
#[derive(Default)]
pub struct Registry {
    factories: BTreeMap<String, Factory>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `factory` under `name`, the name `[[transformer]] name = …` selects. By
    /// convention it is the transform's own name (its output event-source key).
    ///
    /// Panics if `name` is registered twice or is not a valid event-source key: both are
    /// mistakes in the launcher binary, found on its first run.
    pub fn with<T: Transform>(mut self, name: &str, factory: impl Fn() -> T + Send + Sync + 'static) -> Self {
        assert!(EventSourceKey::new(name).is_ok(), "transformer name {name:?} must be a valid event-source key");
        let boxed: Factory = Box::new(move || Box::new(factory()));
        let previous = self.factories.insert(name.to_string(), boxed);
        assert!(previous.is_none(), "transformer `{name}` is registered twice");
        self
    }

    /// A fresh transform registered under `name`, or `None` if there is none.
    pub fn create(&self, name: &str) -> Option<Box<dyn Transform>> {
        self.factories.get(name).map(|factory| factory())
    }

    /// Whether `name` is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.factories.contains_key(name)
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.factories.keys().map(String::as_str).collect()
    }

    /// Each registered name with the output key and the subscriptions of a fresh transform:
    /// the keys only its replicas write, and the keys an event source writes for it. A
    /// transform whose name is not a valid key (its replicas cannot start) owns the registered
    /// name.
    pub fn streams(&self) -> Vec<(&str, EventSourceKey, Vec<EventSourceKey>)> {
        self.factories
            .iter()
            .map(|(name, factory)| {
                let transform = factory();
                let output = EventSourceKey::new(transform.name())
                    .or_else(|_| EventSourceKey::new(name.as_str()))
                    .expect("registered names are valid keys");
                (name.as_str(), output, transform.subscriptions())
            })
            .collect()
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.factories.keys()).finish()
    }
}
