//! Names for new passkeys from their authenticator's AAGUID: the 128-bit
//! model identifier an authenticator writes into the attested credential
//! data of every new credential, attestation or not. Password managers and
//! platforms use one AAGUID each, so "iCloud Keychain" or "Google Password
//! Manager" is a better default name than nothing.
//!
//! webauthn-rs keeps the AAGUID only for attested formats (`packed`, `tpm`),
//! not with attestation `none`, which tessera asks for. So the AAGUID is
//! read from the attestation object's authenticator data — decoded by
//! webauthn-rs-core's own parser (`AuthenticatorData`), after the
//! credential passed the whole registration ceremony, never by hand. An
//! all-zero AAGUID (an authenticator that does not say) names nothing.
//!
//! The table is a handful of entries of the community list
//! <https://github.com/passkeydeveloper/passkey-authenticator-aaguids>
//! (`aaguid.json`); the name only suggests what the user may rename.

use std::collections::BTreeMap;

use webauthn_rs::prelude::{RegisterPublicKeyCredential, Uuid};
use webauthn_rs_core::internals::AuthenticatorData;
use webauthn_rs_core::proto::Registration;

/// Known passkey providers: AAGUID and name.
const KNOWN: &[(&str, &str)] = &[
    ("ea9b8d66-4d01-1d21-3ce4-b6b48cb575d4", "Google Password Manager"),
    ("adce0002-35bc-c60a-648b-0b25f1f05503", "Chrome on Mac"),
    ("b5397666-4885-aa6b-cebf-e52262a439a2", "Chromium Browser"),
    ("771b48fd-d3d4-4f74-9232-fc157ab0507a", "Edge on Mac"),
    ("fbfc3007-154e-4ecc-8c0b-6e020557d7bd", "iCloud Keychain"),
    ("dd4ec289-e01d-41c9-bb89-70fa845d4bf2", "iCloud Keychain (Managed)"),
    ("08987058-cadc-4b81-b6e1-30de50dcbe96", "Windows Hello"),
    ("9ddd1817-af5a-4672-a2b9-3e3dd95000a9", "Windows Hello"),
    ("6028b017-b1d4-4c02-b4b3-afcdafc96bb2", "Windows Hello"),
    ("bada5566-a7aa-401f-bd96-45619a55120d", "1Password"),
    ("d548826e-79b4-db40-a3d8-11116f7e8349", "Bitwarden"),
    ("531126d6-e717-415c-9320-3d9aa6981239", "Dashlane"),
    ("50726f74-6f6e-5061-7373-50726f746f6e", "Proton Pass"),
    ("fdb141b2-5d84-443e-8a35-4698c205a502", "KeePassXC"),
    ("53414d53-554e-4700-0000-000000000000", "Samsung Pass"),
    ("b84e4048-15dc-4dd0-8640-f4f60813c8af", "NordPass"),
];

/// The AAGUID of a new credential (checked by the registration ceremony
/// before this is asked), if its authenticator data carries one that is
/// not all zeros.
pub fn aaguid(credential: &RegisterPublicKeyCredential) -> Option<Uuid> {
    let object: &[u8] = credential.response.attestation_object.as_ref();
    let map: BTreeMap<String, serde_cbor_2::Value> = serde_cbor_2::from_slice(object).ok()?;
    let serde_cbor_2::Value::Bytes(auth_data) = map.get("authData")? else { return None };
    let data = AuthenticatorData::<Registration>::try_from(auth_data.as_slice()).ok()?;
    let aaguid = Uuid::from_bytes(data.acd?.aaguid);
    (!aaguid.is_nil()).then_some(aaguid)
}

/// The name of the authenticator model `aaguid`, if it is a known one.
pub fn known_name(aaguid: Uuid) -> Option<&'static str> {
    KNOWN.iter().find(|(id, _)| Uuid::parse_str(id).ok() == Some(aaguid)).map(|(_, name)| *name)
}

/// The name of a new credential's authenticator, if it is a known one.
pub fn authenticator_name(credential: &RegisterPublicKeyCredential) -> Option<&'static str> {
    aaguid(credential).and_then(known_name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_cbor_2::Value;

    /// A registration response whose authenticator data carries `aaguid`
    /// (the layout of WebAuthn §6.1: RP ID hash, flags with AT set,
    /// counter, attested credential data with a COSE EC2 key).
    fn credential_with(aaguid: Uuid) -> RegisterPublicKeyCredential {
        let mut auth_data = vec![0u8; 32];
        auth_data.push(0x45); // UP, UV, AT
        auth_data.extend_from_slice(&1u32.to_be_bytes());
        auth_data.extend_from_slice(aaguid.as_bytes());
        let credential_id = [7u8; 16];
        auth_data.extend_from_slice(&(credential_id.len() as u16).to_be_bytes());
        auth_data.extend_from_slice(&credential_id);
        let key: BTreeMap<Value, Value> = [
            (Value::Integer(1), Value::Integer(2)),
            (Value::Integer(3), Value::Integer(-7)),
            (Value::Integer(-1), Value::Integer(1)),
            (Value::Integer(-2), Value::Bytes(vec![1; 32])),
            (Value::Integer(-3), Value::Bytes(vec![2; 32])),
        ]
        .into_iter()
        .collect();
        auth_data.extend(serde_cbor_2::to_vec(&Value::Map(key)).unwrap());
        let object: BTreeMap<Value, Value> = [
            (Value::Text("fmt".into()), Value::Text("none".into())),
            (Value::Text("attStmt".into()), Value::Map(BTreeMap::new())),
            (Value::Text("authData".into()), Value::Bytes(auth_data)),
        ]
        .into_iter()
        .collect();
        let object = serde_cbor_2::to_vec(&Value::Map(object)).unwrap();
        let json = serde_json::json!({
            "id": "BwcHBwcHBwcHBwcHBwcHBw",
            "rawId": "BwcHBwcHBwcHBwcHBwcHBw",
            "type": "public-key",
            "response": {
                "attestationObject": base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, object),
                "clientDataJSON": "e30",
            },
        });
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn the_aaguid_is_read_from_the_authenticator_data() {
        let bitwarden = Uuid::parse_str("d548826e-79b4-db40-a3d8-11116f7e8349").unwrap();
        assert_eq!(aaguid(&credential_with(bitwarden)), Some(bitwarden));
        assert_eq!(authenticator_name(&credential_with(bitwarden)), Some("Bitwarden"));
        let unknown = Uuid::parse_str("01020304-0506-0708-0102-030405060708").unwrap();
        assert_eq!(aaguid(&credential_with(unknown)), Some(unknown));
        assert_eq!(authenticator_name(&credential_with(unknown)), None);
        assert_eq!(aaguid(&credential_with(Uuid::nil())), None, "all zeros names nothing");
        let mut garbage = credential_with(bitwarden);
        garbage.response.attestation_object = vec![1, 2, 3].into();
        assert_eq!(aaguid(&garbage), None);
    }

    #[test]
    fn the_table_parses_and_names_known_providers() {
        for (id, name) in KNOWN {
            assert!(Uuid::parse_str(id).is_ok(), "{id}");
            assert!(!name.is_empty());
        }
        let google = Uuid::parse_str("ea9b8d66-4d01-1d21-3ce4-b6b48cb575d4").unwrap();
        assert_eq!(known_name(google), Some("Google Password Manager"));
        assert_eq!(known_name(Uuid::nil()), None);
    }
}
