//! [`services!`]: declares the services a feature's handlers share as one
//! struct that is itself an extractor, built from any router state that
//! provides each field through axum's `FromRef` (as [`crate::state::AppState`]
//! does). A handler then takes `gate: Gate` instead of four `State<…>`
//! arguments, and its signature still names only what it can touch.

/// `services! { /// docs  pub struct Name { /// docs  field: Type, … } }`
/// declares the struct and its `FromRequestParts` implementation (which
/// cannot fail: each field is cloned from the router state).
macro_rules! services {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( $(#[$field_meta:meta])* $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $( $(#[$field_meta])* $field: $ty, )*
        }

        impl<S> axum::extract::FromRequestParts<S> for $name
        where
            S: Send + Sync,
            $( $ty: axum::extract::FromRef<S>, )*
        {
            type Rejection = std::convert::Infallible;

            async fn from_request_parts(
                _parts: &mut http::request::Parts,
                state: &S,
            ) -> Result<Self, Self::Rejection> {
                Ok($name { $( $field: <$ty as axum::extract::FromRef<S>>::from_ref(state), )* })
            }
        }
    };
}

pub(crate) use services;
