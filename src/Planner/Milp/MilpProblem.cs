namespace Planner.Cli.Milp;

/// <summary>Sense of a linear constraint.</summary>
public enum RowSense { LessOrEqual, GreaterOrEqual, Equal }

/// <summary>A variable of a mixed-integer linear program.</summary>
public sealed record MilpVariable(string Name, double Lower, double Upper, double Objective, bool Integer);

/// <summary>A linear constraint Σ coefficient·variable (sense) rhs.</summary>
public sealed record MilpRow(string Name, IReadOnlyList<(int Variable, double Coefficient)> Terms, RowSense Sense, double Rhs);

/// <summary>A minimisation MILP built row by row.</summary>
public sealed class MilpProblem
{
    private readonly List<MilpVariable> _variables = [];
    private readonly List<MilpRow> _rows = [];

    /// <summary>Variables in index order.</summary>
    public IReadOnlyList<MilpVariable> Variables => _variables;

    /// <summary>Constraints.</summary>
    public IReadOnlyList<MilpRow> Rows => _rows;

    /// <summary>Adds a variable; returns its index.</summary>
    public int AddVariable(string name, double lower, double upper, double objective = 0, bool integer = false)
    {
        _variables.Add(new MilpVariable(name, lower, upper, objective, integer));
        return _variables.Count - 1;
    }

    /// <summary>Adds a binary variable; returns its index.</summary>
    public int AddBinary(string name, double objective = 0) => AddVariable(name, 0, 1, objective, integer: true);

    /// <summary>A known feasible assignment (variable index to value) the solver may start from.</summary>
    public IReadOnlyDictionary<int, double>? Start { get; set; }

    /// <summary>Adds a constraint.</summary>
    public void AddRow(string name, IEnumerable<(int Variable, double Coefficient)> terms, RowSense sense, double rhs) =>
        _rows.Add(new MilpRow(name, terms.Where(t => t.Coefficient != 0).ToList(), sense, rhs));
}

/// <summary>The outcome of a solve.</summary>
/// <param name="Status">Optimal, Infeasible, or Unknown (time limit or numerical trouble).</param>
/// <param name="Objective">Objective value when a solution exists.</param>
/// <param name="Values">Variable values in index order when a solution exists.</param>
public sealed record MilpSolution(MilpStatus Status, double Objective, IReadOnlyList<double> Values);

/// <summary>Solver outcome.</summary>
public enum MilpStatus { Optimal, Infeasible, Unknown }

/// <summary>A MILP solver: CBC today, another later.</summary>
public interface IMilpSolver
{
    /// <summary>Solver name and version, for reports.</summary>
    string Name { get; }

    /// <summary>Minimises the problem.</summary>
    MilpSolution Solve(MilpProblem problem, double timeLimitSeconds = 10);
}
