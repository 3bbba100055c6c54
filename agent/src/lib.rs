//! TPS agent (see issue: agent). Placeholder until the agent lands.
