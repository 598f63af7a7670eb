//! `schemas register|check`: put a transformer's output schema in the schema registry, or
//! check that it could go there, under the subject `<transformer>-value`.
//!
//! A DET version whose output schema breaks the subject's compatibility setting (BACKWARD by
//! default) is refused with one sentence: its readers could not read what it would write.

use crate::cli::SchemasArgs;
use crate::registry::Registry;
use crate::{Error, SchemaStep};
use competing_transformers_kafka::schema_registry::{subject_for, SchemaRegistry};

/// Registers (`register == true`) or checks the output schema of `args.transformer`.
pub(super) async fn run(registry: &Registry, args: &SchemasArgs, register: bool) -> Result<(), Error> {
    let transform = registry.create(&args.transformer).ok_or_else(|| {
        let known = registry.names().iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
        Error::Usage(format!("unknown transformer `{}`; this launcher knows {known}", args.transformer))
    })?;
    let (name, version) = (transform.name().to_string(), transform.version());
    let schema = transform.output_schema().ok_or_else(|| {
        Error::Usage(format!("transformer `{name}` v{version} declares no Avro output schema (`Transform::output_schema`); it writes JSON only"))
    })?;
    let client = SchemaRegistry::new(&args.registry)?;
    let subject = subject_for(&name);
    let step = if register { SchemaStep::Register } else { SchemaStep::Check };
    let refuse = |source| Error::OutputSchema { transformer: name.clone(), version, step, source };
    if register {
        let id = client.register(&subject, schema).await.map_err(refuse)?;
        println!(
            "{name} v{version}: output schema registered under subject `{subject}` with id {id} at {}",
            client.url()
        );
    } else {
        client.check(&subject, schema).await.map_err(refuse)?;
        println!("{name} v{version}: output schema is compatible with subject `{subject}` at {}", client.url());
    }
    Ok(())
}
