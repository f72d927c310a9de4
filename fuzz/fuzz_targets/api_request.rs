//! The metadata API parser on arbitrary bodies: never panic; every refusal
//! is a well-formed Hasura error; every accepted create renders.
#![no_main]

use chime::hasura::{self, Command, Endpoint};
use chime::webhook;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for endpoint in [Endpoint::Metadata, Endpoint::Query] {
        match hasura::parse_request(data, endpoint) {
            Ok(Command::CreateScheduledEvent(new)) => {
                let record = new.into_record(uuid::Uuid::nil(), chime::record::UnixMicros(0));
                let body = webhook::webhook_body(&record);
                serde_json::from_str::<serde_json::Value>(&body).expect("webhook body is JSON");
            }
            Ok(_) => {}
            Err(e) => {
                assert!(e.path.starts_with('$'), "path {:?}", e.path);
                assert!((400..600).contains(&e.status));
            }
        }
    }
});
