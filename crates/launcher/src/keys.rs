//! `keys generate`: a new Ed25519 key pair for a protected key's writers.
//!
//! The secret goes to a new file only this user may read (never to stdout, never to a log);
//! the public key, which goes in every launcher's `[[trust.protected]]`, is printed.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use competing_transformers::signature::{Signer, SECRET_KEY_BYTES};

use crate::{out, Error};

/// Writes a new secret key to `secret_file` (created, mode 0600; an existing file is never
/// replaced) and prints its public key and the config lines that use it.
pub(crate) fn generate(secret_file: &Path) -> Result<(), Error> {
    let mut secret = [0u8; SECRET_KEY_BYTES];
    getrandom::getrandom(&mut secret)
        .map_err(|error| Error::Usage(format!("cannot draw a random key from the operating system ({error})")))?;
    let signer = Signer::from_secret(&secret);
    secret.fill(0);
    let path = secret_file.display().to_string();
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(secret_file)
        .and_then(|mut file| writeln!(file, "{}", signer.secret_base64()).and_then(|()| file.sync_all()));
    written.map_err(|source| match source.kind() {
        std::io::ErrorKind::AlreadyExists => {
            Error::Usage(format!("{path} exists; keys generate never replaces a key: name a new file"))
        }
        _ => Error::Usage(format!("cannot write {path} ({source}); check the directory and its permissions")),
    })?;
    let public_key = signer.public_key();
    out(format_args!("{public_key}"))?;
    eprintln!(
        "wrote the secret key to {path} (readable by this user only); give it to the writers with --signing-key-file, TRANSFORMER_SIGNING_KEY_FILE or [signing] key_file, and list the public key in every launcher's and reader's config:\n\n[[trust.protected]]\nkeys = [\"<det>\", \"<det>.dead-letters\"]\npublic_keys = [\"{public_key}\"]"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn a_new_key_goes_to_a_new_private_file_and_is_never_replaced() {
        let dir = std::env::temp_dir().join(format!("ct-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("writer.key");
        generate(&file).unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(Signer::from_base64(&text).is_ok());
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        let error = generate(&file).unwrap_err().to_string();
        assert!(error.contains("never replaces"), "{error}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
