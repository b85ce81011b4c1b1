//! Warnings for configs that are valid but probably not what the operator meant.
pub fn lint(_settings: &super::Settings) -> Vec<String> {
    Vec::new()
}
