//! Namespace identity: when two bdevs are paths to the same namespace.
//!
//! Two identities name the same namespace when they share at least one identifier (NGUID,
//! EUI-64 or UUID) and no identifier present on both differs.

use bdev::{NamespaceId, Uuid};

/// How two identities relate.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum IdMatch {
    /// At least one common identifier, all common ones equal.
    Same,
    /// No identifier in common.
    Unrelated,
    /// An identifier present on both differs (named).
    Conflict(&'static str),
}

/// Whether the identity carries any identifier.
pub(crate) fn has_identity(id: &NamespaceId) -> bool {
    id.nguid.is_some() || id.eui64.is_some() || id.uuid.is_some_and(|u| !u.is_nil())
}

fn cmp_field<T: PartialEq>(a: &Option<T>, b: &Option<T>, name: &'static str, same: &mut bool) -> Option<&'static str> {
    match (a, b) {
        (Some(x), Some(y)) if x == y => {
            *same = true;
            None
        }
        (Some(_), Some(_)) => Some(name),
        _ => None,
    }
}

/// Compare two identities.
pub(crate) fn compare(a: &NamespaceId, b: &NamespaceId) -> IdMatch {
    let mut same = false;
    let ua = a.uuid.filter(|u| !u.is_nil());
    let ub = b.uuid.filter(|u| !u.is_nil());
    let conflicts = [
        cmp_field(&a.nguid, &b.nguid, "nguid", &mut same),
        cmp_field(&a.eui64, &b.eui64, "eui64", &mut same),
        cmp_field(&ua, &ub, "uuid", &mut same),
    ];
    if let Some(name) = conflicts.into_iter().flatten().next() {
        return IdMatch::Conflict(name);
    }
    if same {
        IdMatch::Same
    } else {
        IdMatch::Unrelated
    }
}

/// The union of two identities that compare [`IdMatch::Same`].
pub(crate) fn merge(a: &NamespaceId, b: &NamespaceId) -> NamespaceId {
    NamespaceId {
        nguid: a.nguid.or(b.nguid),
        eui64: a.eui64.or(b.eui64),
        uuid: a.uuid.filter(|u| !u.is_nil()).or(b.uuid.filter(|u| !u.is_nil())),
    }
}

/// A UUID standing for the namespace: its UUID, else its NGUID read as one, else its EUI-64
/// in the first eight bytes.
pub(crate) fn namespace_uuid(id: &NamespaceId) -> Uuid {
    if let Some(u) = id.uuid.filter(|u| !u.is_nil()) {
        return u;
    }
    if let Some(n) = id.nguid {
        return Uuid(n);
    }
    if let Some(e) = id.eui64 {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&e);
        return Uuid(b);
    }
    Uuid::NIL
}

/// Human-readable identity for messages.
pub(crate) fn describe(id: &NamespaceId) -> String {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let mut parts = Vec::new();
    if let Some(n) = id.nguid {
        parts.push(format!("nguid {}", hex(&n)));
    }
    if let Some(e) = id.eui64 {
        parts.push(format!("eui64 {}", hex(&e)));
    }
    if let Some(u) = id.uuid.filter(|u| !u.is_nil()) {
        parts.push(format!("uuid {u}"));
    }
    if parts.is_empty() {
        "no identity".into()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(nguid: Option<u8>, eui: Option<u8>, uuid: Option<u8>) -> NamespaceId {
        NamespaceId { nguid: nguid.map(|x| [x; 16]), eui64: eui.map(|x| [x; 8]), uuid: uuid.map(|x| Uuid([x; 16])) }
    }

    #[test]
    fn identities_compare_by_common_fields() {
        assert_eq!(compare(&id(Some(1), None, None), &id(Some(1), Some(2), None)), IdMatch::Same);
        assert_eq!(compare(&id(Some(1), None, None), &id(None, Some(1), None)), IdMatch::Unrelated);
        assert_eq!(compare(&id(Some(1), Some(2), None), &id(Some(1), Some(3), None)), IdMatch::Conflict("eui64"));
        assert_eq!(compare(&id(None, None, Some(0)), &id(None, None, Some(0))), IdMatch::Unrelated, "nil uuid is none");
        assert_eq!(compare(&id(None, None, Some(4)), &id(None, None, Some(4))), IdMatch::Same);
        let m = merge(&id(Some(1), None, None), &id(None, Some(2), Some(3)));
        assert_eq!(m, id(Some(1), Some(2), Some(3)));
        assert!(!has_identity(&id(None, None, Some(0))));
    }

    #[test]
    fn namespace_uuid_prefers_uuid_then_nguid_then_eui64() {
        assert_eq!(namespace_uuid(&id(Some(1), Some(2), Some(3))), Uuid([3; 16]));
        assert_eq!(namespace_uuid(&id(Some(1), Some(2), None)), Uuid([1; 16]));
        let e = namespace_uuid(&id(None, Some(2), None));
        assert_eq!(&e.0[..8], &[2; 8]);
        assert_eq!(&e.0[8..], &[0; 8]);
        assert!(describe(&id(None, Some(0xab), None)).contains("eui64 abababababababab"));
    }
}
