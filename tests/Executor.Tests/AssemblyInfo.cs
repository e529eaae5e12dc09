using Xunit;

// Leak tests compare process-wide handle counters: no other test may create tensors meanwhile.
[assembly: CollectionBehavior(DisableTestParallelization = true)]
