namespace Planner.Executor.Torch;

/// <summary>
/// Disposes every tensor created on this thread while it is the innermost scope: per-step temporaries need no
/// explicit Dispose. <see cref="Keep"/> moves a tensor out (to the enclosing scope, or to no scope).
/// </summary>
public sealed class DisposeScope : IDisposable
{
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

    /// <summary>Keeps a tensor alive past this scope (it moves to the enclosing scope, if any).</summary>
    public T Keep<T>(T tensor) where T : class
    {
        if (tensor is Tensor t && _tensors.Remove(t))
            _parent?._tensors.Add(t);
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
            _current = _parent;
    }
}
