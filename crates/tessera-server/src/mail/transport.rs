//! Where messages go: an SMTP server (`lettre`, plain, STARTTLS or
//! implicit TLS with rustls, optional login), or a folder of `.eml` files.

use std::path::PathBuf;
use std::time::Duration;

use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS, which is required (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only for a relay on the same host or in tests.
    None,
}

/// An SMTP server.
#[derive(Clone)]
pub struct SmtpConfig {
    /// Host name (checked against its certificate with TLS).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Encryption.
    pub security: SmtpSecurity,
    /// Login, if the server wants one.
    pub credentials: Option<(String, String)>,
    /// Longest wait for the server on one message.
    pub timeout: Duration,
}

impl std::fmt::Debug for SmtpConfig {
    // The password stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("username", &self.credentials.as_ref().map(|(user, _)| user))
            .finish()
    }
}

/// A configured way out.
#[derive(Clone)]
pub enum Transport {
    /// An SMTP server.
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// `.eml` files in a folder.
    Files(AsyncFileTransport<Tokio1Executor>, PathBuf),
}

impl Transport {
    /// The transport for `smtp`, or files in `eml_dir` without it.
    pub fn new(smtp: Option<&SmtpConfig>, eml_dir: &std::path::Path) -> Result<Transport, String> {
        let Some(smtp) = smtp else {
            // The folder is made when the first message is written, so a
            // server that sends nothing leaves nothing behind.
            return Ok(Transport::Files(AsyncFileTransport::new(eml_dir), eml_dir.to_path_buf()));
        };
        let builder = match smtp.security {
            SmtpSecurity::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host)
                .map_err(|e| format!("mail.smtp_host {:?}: {e}", smtp.host))?,
            SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp.host)
                .map_err(|e| format!("mail.smtp_host {:?}: {e}", smtp.host))?,
            SmtpSecurity::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host),
        };
        let mut builder = builder.port(smtp.port).timeout(Some(smtp.timeout));
        if let Some((user, password)) = &smtp.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(Transport::Smtp(builder.build()))
    }

    /// Where mail goes, for the start-up log line.
    pub fn describe(&self) -> String {
        match self {
            Transport::Smtp(_) => "SMTP".into(),
            Transport::Files(_, dir) => format!(".eml files in {}", dir.display()),
        }
    }

    /// Sends one message.
    pub async fn send(&self, message: Message) -> Result<(), String> {
        match self {
            Transport::Smtp(smtp) => smtp.send(message).await.map(|_| ()).map_err(|e| e.to_string()),
            Transport::Files(files, dir) => {
                tokio::fs::create_dir_all(dir).await.map_err(|e| format!("mail.eml_dir {}: {e}", dir.display()))?;
                files.send(message).await.map(|_| ()).map_err(|e| e.to_string())
            }
        }
    }
}
