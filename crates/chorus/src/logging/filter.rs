//! Which spans and events are recorded: `target=level` directives that can
//! be replaced at run time (SIGHUP).
//!
//! Decided once per callsite (tracing caches the answer), so an enabled span
//! costs nothing more when it is entered or left: connection tasks enter
//! their span on every poll.

use std::sync::{Arc, RwLock};

use tracing::subscriber::Interest;
use tracing::{Metadata, Subscriber};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::{Context, Layer};

/// Parses a directive string: `info`, `debug`, `chorus_core=debug,info`.
pub fn parse(directives: &str) -> Result<Targets, String> {
    directives.parse::<Targets>().map_err(|e| e.to_string())
}

/// The filter layer; clones share the directives.
#[derive(Clone)]
pub struct Directives(Arc<RwLock<Targets>>);

impl Directives {
    pub fn new(targets: Targets) -> Self {
        Self(Arc::new(RwLock::new(targets)))
    }

    /// Replaces the directives and makes every callsite ask again.
    pub fn replace(&self, targets: Targets) {
        match self.0.write() {
            Ok(mut t) => *t = targets,
            Err(poisoned) => *poisoned.into_inner() = targets,
        }
        tracing::callsite::rebuild_interest_cache();
    }

    fn allows(&self, meta: &Metadata<'_>) -> bool {
        match self.0.read() {
            Ok(t) => t.would_enable(meta.target(), meta.level()),
            Err(poisoned) => poisoned.into_inner().would_enable(meta.target(), meta.level()),
        }
    }
}

impl<S: Subscriber> Layer<S> for Directives {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if self.allows(meta) { Interest::always() } else { Interest::never() }
    }

    fn enabled(&self, meta: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        self.allows(meta)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        match self.0.read() {
            Ok(t) => t.default_level().into_iter().chain(t.iter().map(|(_, l)| l)).max(),
            Err(_) => Some(LevelFilter::TRACE),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_levels_and_targets_and_refuses_nonsense() {
        let t = parse("chorus_core=debug,warn").unwrap();
        assert!(t.would_enable("chorus_core::hub", &tracing::Level::DEBUG));
        assert!(!t.would_enable("chorus_server", &tracing::Level::INFO));
        assert!(t.would_enable("chorus_server", &tracing::Level::WARN));
        assert!(parse("chorus=loud").is_err());
    }

    #[test]
    fn replacing_the_directives_applies_to_callsites_already_seen() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tracing_subscriber::layer::SubscriberExt;

        struct Count(Arc<AtomicUsize>);
        impl<S: Subscriber> Layer<S> for Count {
            fn on_event(&self, _: &tracing::Event<'_>, _: Context<'_, S>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let seen = Arc::new(AtomicUsize::new(0));
        let d = Directives::new(parse("info").unwrap());
        let subscriber = tracing_subscriber::registry().with(d.clone()).with(Count(seen.clone()));
        let emit = || tracing::debug!("detail");
        tracing::subscriber::with_default(subscriber, || {
            emit();
            assert_eq!(seen.load(Ordering::SeqCst), 0);
            d.replace(parse("debug").unwrap());
            emit();
            assert_eq!(seen.load(Ordering::SeqCst), 1);
            d.replace(parse("warn").unwrap());
            emit();
            assert_eq!(seen.load(Ordering::SeqCst), 1);
        });
    }

    #[test]
    fn the_hint_is_the_most_verbose_directive() {
        let d = Directives::new(parse("chorus_core=debug,warn").unwrap());
        assert_eq!(<Directives as Layer<tracing_subscriber::Registry>>::max_level_hint(&d), Some(LevelFilter::DEBUG));
        d.replace(parse("error").unwrap());
        assert_eq!(<Directives as Layer<tracing_subscriber::Registry>>::max_level_hint(&d), Some(LevelFilter::ERROR));
    }
}
