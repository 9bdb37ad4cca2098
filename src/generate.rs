// TEMPORARY placeholder until the generator lands (being written concurrently).
#[derive(Debug, Clone, Default)]
pub struct GenerateConfig {
    pub users: u64,
    pub events: u64,
    pub seed: u64,
}
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GenerateStats {
    pub lines: u64,
}
pub fn generate(
    _config: &GenerateConfig,
    _out: &mut impl std::io::Write,
) -> std::io::Result<GenerateStats> {
    Ok(GenerateStats::default())
}
