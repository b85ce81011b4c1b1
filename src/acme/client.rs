//! One ACME order from start to certificate (RFC 8555 §7.4), with instant-acme: the
//! account (made once, then reused from the state directory), the order, a challenge
//! per authorization answered through [`Challenges`], the wait for validation, the CSR
//! and the certificate chain.
//!
//! It never logs or returns key material: errors carry the CA's problem documents and
//! transport errors, which hold neither the account key nor the certificate key.

use std::time::Duration;

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, Order,
    OrderStatus, RetryPolicy,
};

use super::challenge::{Challenges, Installed};
use super::store::StateDir;
use super::{AcmeError, certs};
use crate::config::{AcmeChallenge, AcmeSettings};
use crate::error_text::with_causes;

/// How long the CA may take to validate every name, then to issue: polled from 250 ms
/// on, doubling.
const VALIDATION_POLL: RetryPolicy = RetryPolicy::new().timeout(Duration::from_secs(120));
const ISSUANCE_POLL: RetryPolicy = RetryPolicy::new().timeout(Duration::from_secs(60));

/// A certificate chain (PEM, end-entity first) and its private key (PKCS#8 PEM).
pub struct Issued {
    pub chain_pem: String,
    pub key_pem: String,
}

/// An account at the CA, ready to order.
pub struct AcmeClient {
    account: Account,
}

impl AcmeClient {
    /// Restores the account saved in `state` for this directory, or registers a new
    /// one (agreeing to the CA's terms) and saves it.
    pub async fn connect(settings: &AcmeSettings, state: &StateDir) -> Result<Self, AcmeError> {
        let directory = &settings.directory;
        if let Some(credentials) = state.account(directory)? {
            let account = builder(settings)?
                .from_credentials(credentials)
                .await
                .map_err(ca_error("loading the account"))?;
            return Ok(Self { account });
        }
        let contact = settings
            .email
            .as_ref()
            .map(|email| format!("mailto:{email}"));
        let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
        let new_account = NewAccount {
            contact: &contact,
            terms_of_service_agreed: true,
            only_return_existing: false,
        };
        let (account, credentials) = builder(settings)?
            .create(&new_account, directory.clone(), None)
            .await
            .map_err(ca_error("registering an account"))?;
        state.save_account(directory, credentials)?;
        tracing::info!(directory = %directory, account = account.id(), "ACME account registered");
        Ok(Self { account })
    }

    /// Orders a certificate for `settings.domains`, answers the challenges, waits for
    /// the CA, and returns the chain with a new key.
    pub async fn issue(
        &self,
        settings: &AcmeSettings,
        challenges: &Challenges,
    ) -> Result<Issued, AcmeError> {
        let identifiers: Vec<Identifier> = settings
            .domains
            .iter()
            .map(|domain| Identifier::Dns(domain.clone()))
            .collect();
        let mut order = self
            .account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(|error| match &error {
                instant_acme::Error::Api(problem)
                    if problem
                        .r#type
                        .as_deref()
                        .is_some_and(|t| t.ends_with(":accountDoesNotExist")) =>
                {
                    AcmeError::AccountGone
                }
                _ => ca_error("creating the order")(error),
            })?;
        // Answered until the order is ready or has failed.
        let installed = answer_challenges(&mut order, settings.challenge, challenges).await?;
        let status = order
            .poll_ready(&VALIDATION_POLL)
            .await
            .map_err(ca_error("waiting for validation"))?;
        drop(installed);
        if status != OrderStatus::Ready {
            return Err(AcmeError::Invalid(why_invalid(&mut order).await));
        }
        let key = certs::new_key()?;
        let csr = certs::csr(&settings.domains, &key)?;
        order
            .finalize_csr(&csr)
            .await
            .map_err(ca_error("finalizing the order"))?;
        let chain_pem = order
            .poll_certificate(&ISSUANCE_POLL)
            .await
            .map_err(ca_error("downloading the certificate"))?;
        Ok(Issued {
            chain_pem,
            key_pem: key.serialize_pem(),
        })
    }
}

/// An account builder whose HTTPS client trusts `directory_ca` when set, else the
/// system's roots.
fn builder(settings: &AcmeSettings) -> Result<instant_acme::AccountBuilder, AcmeError> {
    match &settings.directory_ca {
        Some(ca) => Account::builder_with_root(ca),
        None => Account::builder(),
    }
    .map_err(ca_error("setting up HTTPS to the directory"))
}

/// Installs the answer to the chosen challenge of every pending authorization and tells
/// the CA it may validate. The returned guards withdraw the answers when dropped.
async fn answer_challenges(
    order: &mut Order,
    kind: AcmeChallenge,
    challenges: &Challenges,
) -> Result<Vec<Installed>, AcmeError> {
    let challenge_type = match kind {
        AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
        AcmeChallenge::Http01 => ChallengeType::Http01,
    };
    let mut installed = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization.map_err(ca_error("reading an authorization"))?;
        let domain = authorization.identifier().to_string();
        match authorization.status {
            AuthorizationStatus::Pending => {}
            // Validated by an earlier order: nothing to answer.
            AuthorizationStatus::Valid => continue,
            status => {
                return Err(AcmeError::Invalid(format!(
                    "{domain}: authorization is {status:?}"
                )));
            }
        }
        let mut challenge = authorization
            .challenge(challenge_type.clone())
            .ok_or_else(|| AcmeError::NoChallenge {
                domain: domain.clone(),
                kind: kind.name(),
            })?;
        let key_authorization = challenge.key_authorization();
        installed.push(match kind {
            AcmeChallenge::TlsAlpn01 => {
                let certificate =
                    certs::alpn_challenge(&domain, key_authorization.digest().as_ref())?;
                challenges.install_alpn(&domain, certificate)?
            }
            AcmeChallenge::Http01 => {
                challenges.install_http(&challenge.token, key_authorization.as_str())?
            }
        });
        challenge
            .set_ready()
            .await
            .map_err(ca_error("announcing a challenge"))?;
    }
    Ok(installed)
}

/// The CA's reasons for an order that did not become ready: each failed challenge's
/// problem, by domain.
async fn why_invalid(order: &mut Order) -> String {
    let mut reasons = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(authorization)) = authorizations.next().await {
        let domain = authorization.identifier().to_string();
        for challenge in &authorization.challenges {
            if let Some(problem) = &challenge.error {
                reasons.push(format!("{domain}: {problem}"));
            }
        }
    }
    match reasons.is_empty() {
        true => "the order was not validated (the CA gave no reason)".to_string(),
        false => reasons.join("; "),
    }
}

/// Turns an instant-acme error into ours, naming the step that failed.
fn ca_error(step: &'static str) -> impl Fn(instant_acme::Error) -> AcmeError {
    move |error| AcmeError::Ca {
        step,
        reason: with_causes(&error),
    }
}
