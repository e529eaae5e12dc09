namespace Planner.Executor.Torch;

/// <summary>
/// Disposes every tensor created on this thread while it is the innermost scope: per-step temporaries need no
/// explicit Dispose. <see cref="Keep"/> moves a tensor out (to the enclosing scope, or to no scope).
/// </summary>
public sealed class DisposeScope : IDisposable
{
    // Static: the innermost scope of each thread (as libtorch's grad mode is per thread), so that every op records
    // its tensors without a scope passed through every call.
    [ThreadStatic] private static DisposeScope? _current;
    private readonly DisposeScope? _parent;
    private readonly List<Tensor> _tensors = [];
    private bool _disposed;

    private DisposeScope()
    {
        _parent = _current;
        _current = this;
    }

    /// <summary>Opens a scope on this thread.</summary>
    public static DisposeScope Begin() => new();

    /// <summary>Tensors the scope will dispose.</summary>
    public int Count => _tensors.Count;

    internal static void Track(Tensor t) => _current?._tensors.Add(t);

    /// <summary>Removes a tensor from the current scope (it becomes long-lived: the caller disposes it).</summary>
    public static void Untrack(Tensor t) => _current?._tensors.Remove(t);

    /// <summary>
    /// Stops collecting without disposing: the scope keeps its tensors (e.g. a pipeline micro-batch's activations
    /// between its forward and its backward) until <see cref="Resume"/> or <see cref="Dispose"/>. Must be the
    /// innermost scope.
    /// </summary>
    public void Detach()
    {
        if (_current != this)
            throw new InvalidOperationException("only the innermost dispose scope can be detached");
        _current = _resumedParent ?? _parent;
        _detached = true;
    }

    /// <summary>Collects again on this thread, inside whatever scope is current now.</summary>
    public void Resume()
    {
        if (!_detached)
            throw new InvalidOperationException("the scope is not detached");
        _resumedParent = _current;
        _current = this;
        _detached = false;
    }

    private bool _detached;
    private DisposeScope? _resumedParent;

    /// <summary>Keeps a tensor alive past this scope (it moves to the enclosing scope, if any).</summary>
    public T Keep<T>(T tensor) where T : class
    {
        if (tensor is Tensor t && _tensors.Remove(t))
            (_resumedParent ?? _parent)?._tensors.Add(t);
        return tensor;
    }

    /// <summary>Disposes the scope's tensors and restores the enclosing scope.</summary>
    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        foreach (var t in _tensors)
            t.Dispose();
        _tensors.Clear();
        if (_current == this)
            _current = _resumedParent ?? _parent;
    }
}
