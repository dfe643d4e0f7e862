//! The dynamic-module floor `./build.sh bench` measures (front m0): a module whose filter does
//! nothing, built with these bindings and the release profile, so that what the dynamic_modules
//! filter itself costs Envoy per request is told apart from what harbor-mirror's module adds.

use envoy_dynamic_module::{ConfigContext, ConfigError, FilterConfig, HttpFilter, HttpFilterHandle, Module};

struct Floor;
struct FloorConfig;
struct FloorFilter;

impl Module for Floor {
    type Config = FloorConfig;

    fn new_config(_ctx: &mut ConfigContext<'_>, _name: &str, _config: &[u8]) -> Result<FloorConfig, ConfigError> {
        Ok(FloorConfig)
    }
}

impl FilterConfig for FloorConfig {
    type Filter = FloorFilter;

    fn new_filter(&self, _envoy: &mut HttpFilterHandle<'_>) -> FloorFilter {
        FloorFilter
    }
}

impl HttpFilter for FloorFilter {}

envoy_dynamic_module::export_module!(Floor);
