import XCTest
@testable import LockstepNN

/// Expected rates computed with python3 from the formulas in Schedule.swift's doc comments.
final class ScheduleTests: XCTestCase {
    func testConstant() {
        let schedule = ConstantSchedule(learningRate: 0.05)
        XCTAssertEqual(schedule.learningRate(step: 0), 0.05)
        XCTAssertEqual(schedule.learningRate(step: 123_456), 0.05)
    }

    func testStepDecay() {
        let schedule = StepDecaySchedule(learningRate: 0.1, stepSize: 3, gamma: 0.5)
        let steps = [0, 2, 3, 5, 6, 10]
        let expected: [Float] = [0.1, 0.1, 0.05, 0.05, 0.025, 0.0125]
        for (step, rate) in zip(steps, expected) {
            XCTAssertEqual(schedule.learningRate(step: step), rate, accuracy: 1e-8, "step \(step)")
        }
    }

    func testCosineAnnealsToMinimumAndHolds() {
        let schedule = CosineSchedule(learningRate: 0.1, totalSteps: 100, minimumLearningRate: 0.001)
        let steps = [0, 25, 50, 75, 100, 150]
        let expected: [Float] = [0.1, 0.0855017857, 0.0505, 0.0154982143, 0.001, 0.001]
        for (step, rate) in zip(steps, expected) {
            XCTAssertEqual(schedule.learningRate(step: step), rate, accuracy: 1e-8, "step \(step)")
        }
    }

    func testWarmupThenCosine() {
        let schedule = WarmupSchedule(warmupSteps: 4, warmupStartFactor: 0.1,
                                      base: CosineSchedule(learningRate: 0.2, totalSteps: 10))
        let steps = [0, 1, 2, 3, 4, 5, 9, 14, 20]
        let expected: [Float] = [0.02, 0.065, 0.11, 0.155, 0.2, 0.195105652, 0.1, 0, 0]
        for (step, rate) in zip(steps, expected) {
            XCTAssertEqual(schedule.learningRate(step: step), rate, accuracy: 1e-8, "step \(step)")
        }
    }

    func testWarmupThenStepDecayStartsDecayAfterWarmup() {
        let schedule = WarmupSchedule(warmupSteps: 2, base: StepDecaySchedule(learningRate: 1, stepSize: 5, gamma: 0.1))
        XCTAssertEqual(schedule.learningRate(step: 0), 0)
        XCTAssertEqual(schedule.learningRate(step: 1), 0.5, accuracy: 1e-7)
        XCTAssertEqual(schedule.learningRate(step: 2), 1, accuracy: 1e-7)
        XCTAssertEqual(schedule.learningRate(step: 6), 1, accuracy: 1e-7)
        XCTAssertEqual(schedule.learningRate(step: 7), 0.1, accuracy: 1e-7)
    }

    func testZeroWarmupIsTheBaseSchedule() {
        let base = CosineSchedule(learningRate: 0.3, totalSteps: 7, minimumLearningRate: 0.01)
        let schedule = WarmupSchedule(warmupSteps: 0, warmupStartFactor: 0.5, base: base)
        for step in 0..<10 { XCTAssertEqual(schedule.learningRate(step: step), base.learningRate(step: step)) }
    }
}
