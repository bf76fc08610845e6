//! Status as the Gateway API spec writes it: `metav1.Condition`s with the spec's reasons and the
//! object's `observedGeneration`; a condition whose status did not change keeps its
//! `lastTransitionTime`; conditions and route parents written by other controllers are kept.

use serde_json::{json, Value};

/// One condition, before it is stamped with a generation and a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cond {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

impl Cond {
    pub fn yes(type_: &'static str, reason: &str, message: &str) -> Cond {
        Cond { type_, status: true, reason: reason.into(), message: message.into() }
    }
    pub fn no(type_: &'static str, reason: &str, message: &str) -> Cond {
        Cond { type_, status: false, reason: reason.into(), message: message.into() }
    }
}

#[derive(Debug, Clone)]
pub struct ListenerStatus {
    pub name: String,
    pub supported_kinds: Vec<&'static str>,
    pub attached: i32,
    pub conditions: Vec<Cond>,
}

/// A route's status for one parentRef.
#[derive(Debug, Clone)]
pub struct ParentStatus {
    pub parent_ref: Value,
    pub conditions: Vec<Cond>,
}

fn now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The conditions as JSON, stamped with `generation`; each keeps the `lastTransitionTime` of the
/// same type in `old` when its status is unchanged. Conditions of other types in `old` are kept.
pub fn conditions(new: &[Cond], old: Option<&Value>, generation: i64) -> Value {
    let old: Vec<Value> = old.and_then(Value::as_array).cloned().unwrap_or_default();
    let stamp = now();
    let mut out: Vec<Value> = new
        .iter()
        .map(|c| {
            let status = if c.status { "True" } else { "False" };
            let prev = old.iter().find(|o| o["type"] == c.type_);
            let time = match prev {
                Some(p) if p["status"] == status => p["lastTransitionTime"].clone(),
                _ => json!(stamp),
            };
            json!({
                "type": c.type_,
                "status": status,
                "reason": c.reason,
                "message": c.message,
                "observedGeneration": generation,
                "lastTransitionTime": time,
            })
        })
        .collect();
    for o in old {
        if !new.iter().any(|c| o["type"] == c.type_) {
            out.push(o);
        }
    }
    Value::Array(out)
}

/// Same conditions, ignoring times: nothing to write.
pub fn same_conditions(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| -> Vec<Value> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                let mut c = c.clone();
                if let Some(m) = c.as_object_mut() {
                    m.remove("lastTransitionTime");
                }
                c
            })
            .collect()
    };
    strip(a) == strip(b)
}

/// A GatewayClass's status: Accepted, and the features ferry supports.
pub fn gateway_class(old: Option<&Value>, generation: i64, features: &[&str]) -> Value {
    let c = [Cond::yes("Accepted", "Accepted", "ferry serves Gateways of this class")];
    let mut f: Vec<&str> = features.to_vec();
    f.sort_unstable();
    json!({
        "conditions": conditions(&c, old.and_then(|o| o.get("conditions")), generation),
        "supportedFeatures": f.iter().map(|n| json!({"name": n})).collect::<Vec<_>>(),
    })
}

/// A Gateway's status: its conditions (plus `Programmed` from `addresses`), listeners and addresses.
pub fn gateway(s: &super::GatewayStatus, addresses: &[(String, String)], old: Option<&Value>) -> Value {
    let mut conds = s.conditions.clone();
    conds.push(if addresses.is_empty() {
        Cond::no("Programmed", "AddressNotAssigned", "the Gateway's Service has no address yet")
    } else {
        Cond::yes("Programmed", "Programmed", "the Gateway's data plane is serving")
    });
    let old_listeners = old.and_then(|o| o.get("listeners")).and_then(Value::as_array).cloned().unwrap_or_default();
    let listeners: Vec<Value> = s
        .listeners
        .iter()
        .map(|l| {
            let prev = old_listeners.iter().find(|o| o["name"] == l.name.as_str());
            json!({
                "name": l.name,
                "supportedKinds": l.supported_kinds.iter().map(|k| json!({"group": super::GROUP, "kind": k})).collect::<Vec<_>>(),
                "attachedRoutes": l.attached,
                "conditions": conditions(&l.conditions, prev.and_then(|p| p.get("conditions")), s.generation),
            })
        })
        .collect();
    json!({
        "addresses": addresses.iter().map(|(t, v)| json!({"type": t, "value": v})).collect::<Vec<_>>(),
        "conditions": conditions(&conds, old.and_then(|o| o.get("conditions")), s.generation),
        "listeners": listeners,
    })
}

/// A route's `status.parents`: ours replaced by `mine` (by parentRef), others' kept as they are.
pub fn route_parents(controller: &str, mine: &[ParentStatus], generation: i64, old: Option<&Value>) -> Value {
    let old: Vec<Value> = old.and_then(|o| o.get("parents")).and_then(Value::as_array).cloned().unwrap_or_default();
    let mut out: Vec<Value> = old.iter().filter(|p| p["controllerName"] != controller).cloned().collect();
    for m in mine {
        let prev = old.iter().find(|p| p["controllerName"] == controller && p["parentRef"] == m.parent_ref);
        out.push(json!({
            "parentRef": m.parent_ref,
            "controllerName": controller,
            "conditions": conditions(&m.conditions, prev.and_then(|p| p.get("conditions")), generation),
        }));
    }
    json!({ "parents": out })
}
