namespace Planner.Executor.Optim;

/// <summary>An optimizer over the weights a rank holds: libtorch's or the shim's (<see cref="Torch.Optimizer"/>), or
/// one written here over whole-weight statistics (<see cref="Adafactor"/>, <see cref="Adam8bit"/>).</summary>
public interface IOptimizer : IDisposable
{
    /// <summary>One update from the held weights' gradients.</summary>
    void Step();

    /// <summary>Clears the held weights' gradients.</summary>
    void ZeroGrad();

    /// <summary>Sets the learning rate.</summary>
    void SetLearningRate(double lr);

    /// <summary>Bytes of the optimizer's state tensors now (made at the first step).</summary>
    long StateBytes { get; }
}
