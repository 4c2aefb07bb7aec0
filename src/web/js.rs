//! Small helpers for crossing into JavaScript, written once: awaiting a promise and turning
//! whatever JavaScript threw into a message that is safe to show.

use js_sys::{Promise, Reflect};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

/// Awaits a promise.
pub async fn settle(promise: Promise) -> Result<JsValue, JsValue> {
    JsFuture::from(promise).await
}

/// The message of a thrown value: `error.message` for Errors, the string itself for strings,
/// a generic text otherwise. Thrown values are the browser's or the caller's own, never a
/// header we set.
pub fn message_of(thrown: &JsValue) -> String {
    if let Some(error) = thrown.dyn_ref::<js_sys::Error>() {
        let name = String::from(error.name());
        let message = String::from(error.message());
        return if name.is_empty() || name == "Error" {
            message
        } else {
            format!("{name}: {message}")
        };
    }
    thrown
        .as_string()
        .unwrap_or_else(|| "an unknown JavaScript error".to_owned())
}

/// Reads a property, treating a getter that throws as absent.
pub fn get(target: &JsValue, key: &str) -> JsValue {
    Reflect::get(target, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

/// Sets a property on an object we created; cannot fail for plain objects.
pub fn set(target: &JsValue, key: &str, value: &JsValue) {
    let _ = Reflect::set(target, &JsValue::from_str(key), value);
}
